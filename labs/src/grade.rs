//! Grading one run of a lab against what it must show — the lab's own flow, or an
//! exercise's — for `traplab check` (students and teaching assistants) and for the tests.
//!
//! A run passes when it is sound (the hypervisor ended normally, no event was lost), its
//! events contain the expected steps in order, and every domain ended as expected (exited
//! with the status, or was killed). Each failure is a [`Problem`] with an explanation in a
//! student's words (`explain.rs`).

use crate::catalogue::{Exercise, Expected, Lab};
use crate::explain;
use crate::run::{self, Ending};
use serde::Serialize;
use traplab_abi::event::{DomainState, domain_label};
use traplab_tracer::session::Run;
use traplab_tracer::symbols::Symbols;

/// The result of one check. Its JSON form is what `traplab check --json` prints, one line
/// per check.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub lab: String,
    /// The exercise checked, or `None` for the lab's own flow.
    pub exercise: Option<u32>,
    pub passed: bool,
    /// How many steps the expected flow has, and how many matched before the first miss.
    pub steps: usize,
    pub matched: usize,
    /// How many events the run recorded.
    pub events: usize,
    /// Empty when it passed.
    pub problems: Vec<Problem>,
}

/// One reason a check failed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The run itself went wrong: the hypervisor failed, the lab timed out, events were lost.
    Run { explanation: String },
    /// A step of the expected flow did not happen.
    Step {
        /// 1-based, as the messages count.
        step: usize,
        /// The step as the catalogue writes it (`inject vector=14 …`).
        expected: String,
        /// The seq of the event that matched the step before it.
        after_seq: Option<u64>,
        explanation: String,
    },
    /// A domain ended otherwise than expected.
    Domain {
        dom: u16,
        guest: String,
        explanation: String,
    },
}

impl Verdict {
    /// The verdict for a terminal: one line when it passed, the explanations when not.
    pub fn report(&self, lab: &Lab, exercise: Option<&Exercise>) -> String {
        let name = match exercise {
            Some(exercise) => format!(
                "{} exercise {} ({})",
                lab.id, exercise.number, exercise.title
            ),
            None => lab.id.clone(),
        };
        if self.passed {
            return format!(
                "{name}: passed ({} steps matched, every domain ended as expected)\n",
                self.steps
            );
        }
        let mut text = format!(
            "{name}: NOT PASSED ({} of {} steps matched)\n",
            self.matched, self.steps
        );
        for problem in &self.problems {
            text.push_str(&format!("  - {}\n", problem.explanation()));
        }
        match exercise {
            Some(exercise) => text.push_str(&format!(
                "  The exercise starts at `{}` in {}; `traplab trace {}` shows the whole trace.\n",
                exercise.marker(&lab.id),
                exercise.files.join(", "),
                lab.id
            )),
            None => text.push_str(&format!(
                "  `traplab trace {}` shows the whole trace.\n",
                lab.id
            )),
        }
        text
    }
}

impl Problem {
    pub fn explanation(&self) -> &str {
        match self {
            Problem::Run { explanation }
            | Problem::Step { explanation, .. }
            | Problem::Domain { explanation, .. } => explanation,
        }
    }
}

/// Grade `run` of `lab` against its own flow, or against `exercise`'s (a run of
/// [`Exercise::lab`], which may name its own guests). `symbols` are the lab's first guest's
/// (for `sym:` patterns).
pub fn grade(lab: &Lab, exercise: Option<&Exercise>, run: &Run, symbols: &Symbols) -> Verdict {
    let expected = match exercise {
        Some(exercise) => exercise.expected(lab),
        None => lab.expected(),
    };
    let mut problems: Vec<Problem> = run::unsound(run)
        .into_iter()
        .map(|explanation| Problem::Run { explanation })
        .collect();
    let matched = match crate::expect::check(expected.steps, &run.events, symbols) {
        Ok(()) => expected.steps.len(),
        Err(mismatch) => {
            let pattern = &expected.steps[mismatch.step];
            let explanation = format!(
                "step {} of {}: expected {}, but {}",
                mismatch.step + 1,
                expected.steps.len(),
                explain::expectation(pattern),
                explain::instead(pattern, &mismatch, &run.events)
            );
            problems.push(Problem::Step {
                step: mismatch.step + 1,
                expected: mismatch.expected.clone(),
                after_seq: mismatch.after_seq,
                explanation,
            });
            mismatch.step
        }
    };
    // The domains the run had: the exercise's own guests, when it names them.
    let ran = exercise.map(|exercise| exercise.lab(lab));
    problems.extend(domain_problems(ran.as_ref().unwrap_or(lab), expected, run));
    Verdict {
        lab: lab.id.clone(),
        exercise: exercise.map(|exercise| exercise.number),
        passed: problems.is_empty(),
        steps: expected.steps.len(),
        matched,
        events: run.events.len(),
        problems,
    }
}

/// Every domain (the control domain too, when the lab has one) must exit with the expected
/// status, or be killed when the flow says so.
fn domain_problems(lab: &Lab, expected: Expected, run: &Run) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (dom, guest) in lab.domains() {
        let must_be_killed = expected.killed.contains(&dom);
        let ending = run::ending(&run.events, dom);
        let wanted = if must_be_killed {
            "to be killed".to_string()
        } else {
            format!("to exit with status {}", expected.status)
        };
        let actual = match &ending {
            Some(Ending {
                state: DomainState::Killed,
                ..
            }) if must_be_killed => continue,
            Some(Ending {
                state: DomainState::Exited,
                status: Some(status),
                ..
            }) if !must_be_killed && *status == expected.status => continue,
            Some(ending) => format!("it {}", ending.describe()),
            None => "it never ended".to_string(),
        };
        problems.push(Problem::Domain {
            dom,
            guest: guest.to_string(),
            explanation: format!(
                "expected {} ({guest}) {wanted}, but {actual}",
                domain_label(dom)
            ),
        });
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use traplab_abi::event::{Body, DomainChange, Event};
    use traplab_tracer::session::Finish;

    fn lab(killed: Vec<u16>) -> Lab {
        let text = format!(
            "id = \"two\"\ntitle = \"t\"\npart = \"p\"\nclasses = []\nguests = [\"a\", \"b\"]\nsummary = \"s\"\nkilled = {killed:?}\n"
        );
        toml::from_str(&text).expect("a lab")
    }

    fn ended(dom: u16, state: DomainState, status: Option<i32>) -> Event {
        let domain = DomainChange {
            state,
            name: "a".into(),
            status,
            reason: Some("why".into()),
        };
        Event {
            seq: 0,
            tsc: 0,
            dom: Some(dom),
            body: Body::Domain(domain),
        }
    }

    fn run(events: Vec<Event>) -> Run {
        let finish = Finish {
            exit_code: Some(1),
            signal: None,
            hv_status: None,
            stderr: String::new(),
            interrupted: false,
            timed_out: false,
            stopped: None,
            ring_broken: false,
        };
        Run {
            events,
            log: Vec::new(),
            broken: Vec::new(),
            faults: Vec::new(),
            finish,
        }
    }

    #[test]
    fn each_domain_must_end_as_the_lab_says() {
        // The guests are d1 and d2, as Xen numbers its unprivileged domains.
        let events = vec![
            ended(1, DomainState::Exited, Some(0)),
            ended(2, DomainState::Exited, Some(3)),
        ];
        let problems = domain_problems(&lab(vec![]), lab(vec![]).expected(), &run(events));
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].explanation(),
            "expected d2 (b) to exit with status 0, but it exited with status 3 (why)"
        );

        let events = vec![ended(1, DomainState::Exited, Some(0))];
        let problems = domain_problems(&lab(vec![1]), lab(vec![1]).expected(), &run(events));
        let explanations: Vec<&str> = problems.iter().map(Problem::explanation).collect();
        assert_eq!(
            explanations,
            [
                "expected d1 (a) to be killed, but it exited with status 0 (why)",
                "expected d2 (b) to exit with status 0, but it never ended"
            ]
        );
    }

    #[test]
    fn a_control_domain_must_end_too() {
        let mut with_dom0 = lab(vec![]);
        with_dom0.dom0 = Some("toolstack".into());
        let events = vec![
            ended(1, DomainState::Exited, Some(0)),
            ended(2, DomainState::Exited, Some(0)),
        ];
        let problems = domain_problems(&with_dom0, with_dom0.expected(), &run(events));
        let explanations: Vec<&str> = problems.iter().map(Problem::explanation).collect();
        assert_eq!(
            explanations,
            ["expected d0 (toolstack) to exit with status 0, but it never ended"]
        );
    }

    #[test]
    fn a_run_without_a_hypervisor_status_is_a_problem_of_its_own() {
        let verdict = grade(&lab(vec![]), None, &run(Vec::new()), &Symbols::default());
        assert!(!verdict.passed);
        assert!(verdict.problems.iter().any(|problem| matches!(problem, Problem::Run { explanation } if explanation.contains("without a hypervisor status"))));
        let json = serde_json::to_value(&verdict).expect("a verdict is JSON");
        assert_eq!(json["problems"][0]["kind"], "run");
    }
}
