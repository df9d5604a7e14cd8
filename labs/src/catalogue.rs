//! Reading the catalogue (`labs/catalogue/*.toml`).

use crate::expect::Pattern;
use serde::{Deserialize, Serialize};
use traplab_tracer::qemu::{FIRST_GUEST, Start};

/// The embedded catalogue files: `(file name, TOML text)`.
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/catalogue.rs"));

/// One lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lab {
    /// The name on the command line: `traplab trace page-fault`.
    pub id: String,
    pub title: String,
    /// The part of the course it belongs to.
    pub part: String,
    /// The trap classes it shows: exception mnemonics (`#PF`) and exit names (`IOIO`).
    pub classes: Vec<String>,
    /// The guest programs it runs as unprivileged domains, numbered from 1 as Xen numbers
    /// its domUs: d1, d2, … (`guests/src/bin/<name>.rs`).
    pub guests: Vec<String>,
    /// The control domain's program (domain 0, dom0), for a lab that needs one: it sets up
    /// what the others share. Without it the hypervisor itself plays the toolstack.
    #[serde(default)]
    pub dom0: Option<String>,
    /// When the domains start: `in-turn` (the default: each when the one before it ended)
    /// or `together` (all runnable from the start, side by side).
    #[serde(default)]
    pub start: Start,
    /// What happens, in two or three sentences.
    pub summary: String,
    /// Hypervisor settings this lab turns on (`traplab_abi::settings`: extra intercepts,
    /// lazy memory).
    #[serde(default)]
    pub settings: Vec<String>,
    /// The lab's disk, when it has one (`[disk]`): a legacy ATA controller with a raw
    /// image, owned whole by one of its domains.
    #[serde(default)]
    pub disk: Option<LabDisk>,
    /// How the lab's first guest (d1) boots, when it is a kernel that takes a command line,
    /// an initrd or more RAM (`[boot]`): the multiboot lab.
    #[serde(default)]
    pub boot: Option<LabBoot>,
    /// The exit status of the lab's guests (and of `traplab trace`) when all goes right.
    #[serde(default)]
    pub status: i32,
    /// The domains (by number: 1 is the first guest, 0 the control domain) the hypervisor
    /// kills when all goes right: a lab about a fatal fault. The others must exit with
    /// `status`; `traplab trace` then exits with 137 (a domain was killed).
    #[serde(default)]
    pub killed: Vec<u16>,
    /// The events that must appear, in this order (other events may come between): one
    /// pattern per `[[expect]]` table.
    #[serde(default)]
    pub expect: Vec<Pattern>,
    /// The questions the lab's chapter asks.
    #[serde(default)]
    pub questions: Vec<String>,
    /// Tasks a student does by changing code; `traplab check <lab> --exercise N` grades them.
    #[serde(default, rename = "exercise")]
    pub exercises: Vec<Exercise>,
}

/// A lab's `[disk]`: the machine gets a real disk controller (QEMU's legacy ATA, ports
/// 0x1f0–0x1f7 and 0x3f6) with a zero-filled raw image made for the run (or the user's
/// `--disk FILE`), and the hypervisor gives the whole controller to one domain, its driver
/// domain (`hv/src/device/ata.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabDisk {
    /// The domain the controller belongs to, by number (1 is the first guest, 0 the
    /// control domain).
    pub owner: u16,
    /// The image's size in sectors of 512 bytes.
    #[serde(default = "default_sectors")]
    pub sectors: u64,
}

/// A lab's `[boot]`: what `traplab trace --kernel` takes as `--append`, `--initrd`,
/// `--memory` and `--input`, for its first guest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabBoot {
    /// The kernel's arguments (after its name, which the loader puts first).
    #[serde(default)]
    pub append: Option<String>,
    /// A file, relative to the repository, loaded as the kernel's first module.
    #[serde(default)]
    pub initrd: Option<String>,
    /// The kernel, when it is not the lab's guest program: `"debian-linux"`
    /// ([`crate::linux::DEBIAN_LINUX`]), Debian's Linux kernel, fetched on demand. The lab's
    /// first guest then only names the domain.
    #[serde(default)]
    pub kernel: Option<String>,
    /// The `/init` script of a Linux kernel's initramfs, a file relative to the repository:
    /// a real file (not a string here) so that an exercise's patch can change it.
    #[serde(default)]
    pub init: Option<String>,
    /// The domain's RAM in MiB.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// What COM1 receives, as if typed before the kernel started (`--input`): the bytes
    /// the UART's receiver has no room for wait and move in as the kernel reads. A TOML
    /// string's `\n` is a newline: `input = "hello\nquit\n"` is two lines.
    #[serde(default)]
    pub input: Option<String>,
}

fn default_sectors() -> u64 {
    traplab_tracer::disk::DEFAULT_SECTORS
}

/// A task the student does by changing code: the starting point is marked in the code
/// with a comment `EXERCISE <lab>.<number>`, and the solved exercise produces its own
/// expected flow (usually the lab's flow with more, or different, steps). A reference
/// solution is kept apart, in `labs/solutions/<lab>/<number>.patch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exercise {
    /// 1, 2, …: `--exercise N`.
    pub number: u32,
    pub title: String,
    /// What to change, and what the result must show (the exact console lines it asks for).
    pub task: String,
    /// The files to change, relative to the repository; each holds the `EXERCISE` marker.
    pub files: Vec<String>,
    /// The guests' exit status when the exercise is solved (default: the lab's `status`).
    #[serde(default)]
    pub status: Option<i32>,
    /// The domains the hypervisor kills when it is solved (default: the lab's `killed`).
    #[serde(default)]
    pub killed: Option<Vec<u16>>,
    /// The guests the check runs, d1, d2, … (default: the lab's). An exercise whose answer
    /// is the caller's domain number runs its guest as d1 and again as d2: a number written
    /// into the code then cannot pass.
    #[serde(default)]
    pub guests: Option<Vec<String>>,
    /// The flow the solved exercise must produce. It replaces the lab's flow: list every
    /// step that matters, not only the new ones.
    pub expect: Vec<Pattern>,
}

impl Exercise {
    /// The marker that starts the exercise in each of its files.
    pub fn marker(&self, lab: &str) -> String {
        format!("EXERCISE {lab}.{}", self.number)
    }
}

/// What a run of a lab must show: its own flow, or an exercise's.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The steps of the flow, in order: the pattern each step's event must match.
    pub steps: &'a [Pattern],
    /// The exit status of every domain that is not killed.
    pub status: i32,
    /// The domains (by number) that must be killed.
    pub killed: &'a [u16],
}

impl Lab {
    /// Every domain of the lab with its program: the control domain (0) first when the lab
    /// has one, then its guests, 1, 2, …
    pub fn domains(&self) -> Vec<(u16, &str)> {
        let dom0 = self.dom0.iter().map(|name| (0, name.as_str()));
        let guests = self
            .guests
            .iter()
            .enumerate()
            .map(|(index, name)| (FIRST_GUEST + index as u16, name.as_str()));
        dom0.chain(guests).collect()
    }

    /// Is `dom` one of the lab's domains?
    pub fn has_domain(&self, dom: u16) -> bool {
        self.domains().iter().any(|(id, _)| *id == dom)
    }

    /// The lab's own expected flow.
    pub fn expected(&self) -> Expected<'_> {
        Expected {
            steps: &self.expect,
            status: self.status,
            killed: &self.killed,
        }
    }

    /// Exercise `number`.
    pub fn exercise(&self, number: u32) -> Option<&Exercise> {
        self.exercises
            .iter()
            .find(|exercise| exercise.number == number)
    }
}

impl Exercise {
    /// The lab as the check runs it for this exercise: with the exercise's guests, when it
    /// names its own.
    pub fn lab(&self, lab: &Lab) -> Lab {
        let mut lab = lab.clone();
        if let Some(guests) = &self.guests {
            lab.guests = guests.clone();
        }
        lab
    }

    /// What the solved exercise must show; status and killed default to the lab's.
    pub fn expected<'a>(&'a self, lab: &'a Lab) -> Expected<'a> {
        Expected {
            steps: &self.expect,
            status: self.status.unwrap_or(lab.status),
            killed: self.killed.as_deref().unwrap_or(&lab.killed),
        }
    }
}

/// A catalogue file that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("labs/catalogue/{file}: {message}")]
pub struct CatalogueError {
    pub file: String,
    pub message: String,
}

/// Every lab, in catalogue order (sorted by file name).
pub fn all() -> Result<Vec<Lab>, CatalogueError> {
    let labs: Vec<Lab> = FILES
        .iter()
        .map(|(file, text)| {
            let lab: Lab = toml::from_str(text)
                .map_err(|error| CatalogueError { file: file.to_string(), message: error.to_string() })?;
            if format!("{}.toml", lab.id) != *file {
                return Err(CatalogueError { file: file.to_string(), message: format!("id \"{}\" does not match the file name", lab.id) });
            }
            if let Some(refused) = lab.settings.iter().find_map(|name| traplab_abi::settings::refused(name)) {
                return Err(CatalogueError { file: file.to_string(), message: refused });
            }
            if lab.guests.is_empty() {
                return Err(CatalogueError { file: file.to_string(), message: "a lab runs at least one guest (d1)".into() });
            }
            if lab.exercises.iter().any(|exercise| exercise.guests.as_ref().is_some_and(Vec::is_empty)) {
                return Err(CatalogueError { file: file.to_string(), message: "an exercise's guests = [] runs no guest: leave it out to run the lab's".into() });
            }
            // `killed` names domains by number, as the trace does: 1 is the first guest (of
            // the lab, or of the exercise that names its own).
            let runs = std::iter::once((lab.killed.as_slice(), lab.clone()))
                .chain(lab.exercises.iter().map(|exercise| (exercise.killed.as_deref().unwrap_or_default(), exercise.lab(&lab))));
            for (killed, runs) in runs {
                if let Some(dom) = killed.iter().find(|dom| !runs.has_domain(**dom)) {
                    return Err(CatalogueError {
                        file: file.to_string(),
                        message: format!("killed = [{dom}] names no domain of the lab: its domains are {}", domain_list(&runs)),
                    });
                }
            }
            if let Some(disk) = &lab.disk {
                if !lab.has_domain(disk.owner) {
                    return Err(CatalogueError {
                        file: file.to_string(),
                        message: format!("[disk] owner = {} names no domain of the lab: its domains are {}", disk.owner, domain_list(&lab)),
                    });
                }
                // LBA28, which the guests' driver speaks, reaches 2^28 sectors.
                if disk.sectors == 0 || disk.sectors > traplab_abi::ata::LBA28_SECTORS {
                    return Err(CatalogueError {
                        file: file.to_string(),
                        message: format!("[disk] sectors = {}: a disk has 1 to {} sectors", disk.sectors, traplab_abi::ata::LBA28_SECTORS),
                    });
                }
            }
            if let Some(memory) = lab.boot.as_ref().and_then(|boot| boot.memory_mib) {
                use traplab_tracer::qemu::{MAX_DOMAIN_MIB, MIN_DOMAIN_MIB};
                if !(MIN_DOMAIN_MIB..=MAX_DOMAIN_MIB).contains(&memory) {
                    return Err(CatalogueError {
                        file: file.to_string(),
                        message: format!("[boot] memory_mib = {memory}: a domain has {MIN_DOMAIN_MIB} to {MAX_DOMAIN_MIB} MiB of RAM"),
                    });
                }
            }
            if let Some(Err(message)) = lab.boot.as_ref().map(boot_kernel_is_known) {
                return Err(CatalogueError { file: file.to_string(), message });
            }
            let patterns = lab.expect.iter().chain(lab.exercises.iter().flat_map(|exercise| exercise.expect.iter()));
            if let Some(field) = patterns.filter_map(|pattern| pattern.unknown_field()).next() {
                return Err(CatalogueError {
                    file: file.to_string(),
                    message: format!("an expected step has `{field}`, which no event of its kind has (tracer/SCHEMA.md); a key meant for the lab belongs above the first [[expect]]"),
                });
            }
            // Exercises are numbered 1, 2, … in order, so `--exercise N` is the Nth.
            for (index, exercise) in lab.exercises.iter().enumerate() {
                if exercise.number as usize != index + 1 {
                    return Err(CatalogueError {
                        file: file.to_string(),
                        message: format!("exercise \"{}\" has number {}; expected {}", exercise.title, exercise.number, index + 1),
                    });
                }
            }
            Ok(lab)
        })
        .collect::<Result<_, _>>()?;
    Ok(labs)
}

/// Is `[boot] kernel` one traplab knows how to get, with the `/init` it needs? Only Debian's
/// Linux kernel is: an unknown name would otherwise surface as a missing file at run time.
fn boot_kernel_is_known(boot: &LabBoot) -> Result<(), String> {
    use crate::linux::DEBIAN_LINUX;
    match (boot.kernel.as_deref(), &boot.init) {
        (Some(DEBIAN_LINUX), Some(_)) | (None, None) => Ok(()),
        (Some(DEBIAN_LINUX), None) => Err(format!(
            "[boot] kernel = \"{DEBIAN_LINUX}\" needs an init = \"labs/files/<lab>.init\": the script the kernel runs as /init"
        )),
        (Some(other), _) => Err(format!(
            "[boot] kernel = \"{other}\": the only kernel a lab can name is \"{DEBIAN_LINUX}\" (Debian's Linux kernel, fetched on demand); a lab's own kernel is its guest program"
        )),
        (None, Some(_)) => Err(format!(
            "[boot] init is the /init of a Linux kernel's initramfs: it needs kernel = \"{DEBIAN_LINUX}\""
        )),
    }
}

/// `d1 (page-fault), d2 (hello)`: a lab's domains, for messages.
fn domain_list(lab: &Lab) -> String {
    lab.domains()
        .iter()
        .map(|(dom, name)| format!("{} ({name})", traplab_abi::event::domain_label(*dom)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lab called `id`.
pub fn find(id: &str) -> Result<Option<Lab>, CatalogueError> {
    Ok(all()?.into_iter().find(|lab| lab.id == id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<Lab, toml::de::Error> {
        toml::from_str(&format!(
            "id = \"x\"\ntitle = \"t\"\npart = \"p\"\nclasses = []\nguests = [\"front\", \"back\"]\nsummary = \"s\"\n{extra}"
        ))
    }

    fn lab(extra: &str) -> Lab {
        parse(extra).expect("a lab")
    }

    #[test]
    fn guests_are_domains_1_and_up_and_a_control_domain_is_0() {
        let plain = lab("");
        assert_eq!(plain.domains(), [(1, "front"), (2, "back")]);
        assert_eq!(plain.start, Start::InTurn);
        assert!(!plain.has_domain(0));
        let with_dom0 = lab("dom0 = \"toolstack\"\nstart = \"together\"");
        assert_eq!(
            with_dom0.domains(),
            [(0, "toolstack"), (1, "front"), (2, "back")]
        );
        assert_eq!(with_dom0.start, Start::Together);
        assert!(parse("start = \"sometime\"").is_err());
    }

    #[test]
    fn an_exercise_runs_the_lab_s_guests_unless_it_names_its_own() {
        let with_exercises = lab(
            "[[exercise]]\nnumber = 1\ntitle = \"t\"\ntask = \"t\"\nfiles = []\nexpect = []\n\
             [[exercise]]\nnumber = 2\ntitle = \"t\"\ntask = \"t\"\nfiles = []\nexpect = []\nguests = [\"front\", \"front\", \"back\"]",
        );
        let [own, twice] = &with_exercises.exercises[..] else {
            panic!("two exercises")
        };
        assert_eq!(
            own.lab(&with_exercises).domains(),
            [(1, "front"), (2, "back")]
        );
        assert_eq!(
            twice.lab(&with_exercises).domains(),
            [(1, "front"), (2, "front"), (3, "back")]
        );
    }

    #[test]
    fn a_disk_has_an_owner_and_by_default_a_mebibyte() {
        assert!(lab("").disk.is_none());
        let with_disk = lab("[disk]\nowner = 2");
        let disk = with_disk.disk.expect("a disk");
        assert_eq!((disk.owner, disk.sectors), (2, 2048));
        let sized = lab("[disk]\nowner = 1\nsectors = 64").disk.expect("a disk");
        assert_eq!(sized.sectors, 64);
        assert!(parse("[disk]\nsectors = 64").is_err(), "an owner is needed");
        assert!(
            parse("[disk]\nowner = 1\nimage = \"x\"").is_err(),
            "no other keys"
        );
    }

    #[test]
    fn a_boot_table_takes_the_kernel_s_input_with_its_newlines() {
        assert!(lab("[boot]").boot.expect("[boot]").input.is_none());
        let boot = lab("[boot]\ninput = \"hello\\nquit\\n\"")
            .boot
            .expect("[boot]");
        assert_eq!(boot.input.as_deref(), Some("hello\nquit\n"));
    }

    #[test]
    fn a_boot_kernel_is_debian_s_linux_with_an_init_or_nothing() {
        let boot = |extra: &str| lab(&format!("[boot]\n{extra}")).boot.expect("[boot]");
        let linux = boot("kernel = \"debian-linux\"\ninit = \"labs/files/x.init\"");
        assert_eq!(boot_kernel_is_known(&linux), Ok(()));
        assert_eq!(boot_kernel_is_known(&boot("")), Ok(()));
        let other = boot_kernel_is_known(&boot("kernel = \"vmlinuz\"\ninit = \"x\""));
        assert!(other.is_err_and(|message| {
            message.contains("the only kernel a lab can name is \"debian-linux\"")
        }));
        assert!(
            boot_kernel_is_known(&boot("kernel = \"debian-linux\"")).is_err(),
            "no /init"
        );
        assert!(
            boot_kernel_is_known(&boot("init = \"x\"")).is_err(),
            "an /init without Linux"
        );
    }

    #[test]
    fn every_catalogue_lab_names_real_domains() {
        for lab in all().expect("the catalogue parses") {
            for dom in &lab.killed {
                assert!(lab.has_domain(*dom), "{}: killed {dom}", lab.id);
            }
            if let Some(disk) = &lab.disk {
                assert!(lab.has_domain(disk.owner), "{}: disk owner", lab.id);
            }
            assert!(
                lab.domains().iter().any(|(dom, _)| *dom == FIRST_GUEST),
                "{}: a first guest",
                lab.id
            );
        }
    }
}
