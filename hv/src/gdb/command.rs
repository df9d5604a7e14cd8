//! gdb's `monitor` commands, parsed (the program's `gdb/monitor.rs` answers them). Pure, so
//! the host tests it.
//!
//! gdb passes the rest of the `monitor` line to the stub as it is (the `qRcmd` packet); a
//! word the stub does not know is the user's typo, and the answer says so before the list.

/// What `monitor …` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `monitor help`, or `monitor` alone.
    Help,
    /// `monitor traps [N]`: the last N flows.
    Traps(usize),
    /// `monitor catch CLASS` (`off`, or nothing: catch nothing).
    Catch(&'a str),
    /// `monitor decision`.
    Decision,
    /// `monitor domains`.
    Domains,
    /// Anything else: the word that was not understood.
    Unknown(&'a str),
}

/// How many flows `monitor traps` shows without a count.
pub const DEFAULT_TRAPS: usize = 10;

/// The help, one line per command: `(usage, what it does)`. The README and the book's
/// `gdb.md` list the same.
pub const HELP: [(&str, &str); 5] = [
    (
        "monitor traps [N]",
        "the last N trap flows (exit, decision, hv source line), timer ticks included",
    ),
    (
        "monitor catch CLASS",
        "stop at every exit of CLASS before the hypervisor decides, until catch off\n\
         (pf, #GP, ud, cpuid, ioio, hlt, vmmcall, npf, port:N, hypercall:N, vector:N, exit:N; off)",
    ),
    (
        "monitor decision",
        "at a catch stop: what the hypervisor is about to do; otherwise its decision on the\n\
         guest's last trap (timer ticks and gdb's own steps and breakpoints left out)",
    ),
    (
        "monitor domains",
        "every domain: run state, ports, grants, the disk it owns; the store",
    ),
    ("monitor help", "this text"),
];

impl<'a> Command<'a> {
    /// The command in what gdb sent (the text after `monitor`).
    pub fn parse(text: &'a str) -> Command<'a> {
        let text = text.trim();
        let (word, argument) = text
            .split_once(char::is_whitespace)
            .map_or((text, ""), |(word, rest)| (word, rest.trim()));
        match word {
            "" | "help" => Command::Help,
            "traps" => Command::Traps(
                argument
                    .parse::<usize>()
                    .map_or(DEFAULT_TRAPS, |count| count.max(1)),
            ),
            "catch" => Command::Catch(argument),
            "decision" => Command::Decision,
            "domains" => Command::Domains,
            other => Command::Unknown(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands() {
        assert_eq!(Command::parse(""), Command::Help);
        assert_eq!(Command::parse("help"), Command::Help);
        assert_eq!(Command::parse("traps"), Command::Traps(DEFAULT_TRAPS));
        assert_eq!(Command::parse("traps 16"), Command::Traps(16));
        assert_eq!(Command::parse("traps 0"), Command::Traps(1));
        assert_eq!(Command::parse("catch  pf "), Command::Catch("pf"));
        assert_eq!(Command::parse("catch"), Command::Catch(""));
        assert_eq!(Command::parse(" decision"), Command::Decision);
        assert_eq!(Command::parse("domains"), Command::Domains);
    }

    #[test]
    fn an_unknown_word_is_named_not_taken_for_help() {
        assert_eq!(Command::parse("frobnicate"), Command::Unknown("frobnicate"));
        assert_eq!(
            Command::parse("frobnicate now"),
            Command::Unknown("frobnicate")
        );
        assert_eq!(Command::parse("decisions"), Command::Unknown("decisions"));
    }
}
