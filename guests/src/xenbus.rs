//! XenBus: how the two halves of a split driver find each other through the store, and
//! agree, state by state, that they are connected (Xen's `io/xenbus.h`, Linux's
//! `drivers/xen/xenbus/`).
//!
//! Every device has two directories in the store, one per end (the order of the steps is
//! `io/blkif.h`'s: the backend publishes its device properties, the disk's size, with
//! Connected, and the frontend reads them then):
//!
//! | directory                                   | written by          | holds                                       |
//! |---------------------------------------------|---------------------|---------------------------------------------|
//! | `/local/domain/<F>/device/vbd/<vdev>`       | the frontend (F)    | `backend-id`, `ring-ref`, `event-channel`, `state` |
//! | `/local/domain/<B>/backend/vbd/<F>/<vdev>`  | the backend (B)     | `frontend-id`, `sectors`, `sector-size`, `state` |
//!
//! The toolstack in dom0 creates both ([`create_vbd`]: what `xl block-attach` does), each
//! end then moves its own `state` through [`State`] and watches the other's:
//!
//! ```text
//! toolstack: both states 1 (Initialising)
//! backend:   knows its disk; state 2 (InitWait)
//! frontend:  sees 2; grants the ring page, allocates a port; ring-ref, event-channel; state 3 (Initialised)
//! backend:   sees 3; maps the ring, binds the port; sectors, sector-size; state 4 (Connected)
//! frontend:  sees 4; reads sectors; state 4 (Connected)   … requests and responses …
//! frontend:  state 5 (Closing), an event so the backend looks; backend: unmaps, closes; state 6 (Closed)
//! ```
//!
//! A domain that ends without closing (killed, say) moves no state of its own: the other end
//! and the toolstack hear of it through the store's `@releaseDomain` ([`released`],
//! [`wait_for_release`]), as Xen's do, and close what was theirs.
//!
//! How it differs from Xen: xenstore lists directories and fires a watch on the backend's
//! `backend/vbd` directory when the toolstack adds a device there; traplab's store has no
//! listing, so the toolstack also writes `/local/domain/<B>/backend/vbd/attach` =
//! `"<F>/<vdev>"`, the node the backend waits for. The frontend knows its `vdev` (51712,
//! Linux's `xvda`).

use crate::store;
use crate::text::Text;
use traplab_abi::store::RELEASE_DOMAIN;

/// The virtual device number of the one disk: Linux's `xvda` (major 202, minor 0).
pub const VDEV: u16 = 202 << 8;

/// A XenBus state (`enum xenbus_state`, values as in `io/xenbus.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Unknown = 0,
    Initialising = 1,
    InitWait = 2,
    Initialised = 3,
    Connected = 4,
    Closing = 5,
    Closed = 6,
}

impl State {
    /// The state a store value names (`"4"`); anything else is `Unknown`.
    pub fn from_text(text: &str) -> State {
        match text {
            "1" => State::Initialising,
            "2" => State::InitWait,
            "3" => State::Initialised,
            "4" => State::Connected,
            "5" => State::Closing,
            "6" => State::Closed,
            _ => State::Unknown,
        }
    }

    /// Its value in the store: the number, as xenstore holds it.
    pub fn as_text(self) -> &'static str {
        ["0", "1", "2", "3", "4", "5", "6"][self as usize]
    }
}

/// A store path.
pub type Path = Text<128>;

/// One virtual block device: who is the frontend, who the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub frontend: u16,
    pub backend: u16,
    pub vdev: u16,
}

impl Device {
    /// The frontend's directory.
    pub fn frontend_dir(&self) -> Path {
        crate::text!(
            128,
            "/local/domain/{}/device/vbd/{}",
            self.frontend,
            self.vdev
        )
    }

    /// The backend's directory.
    pub fn backend_dir(&self) -> Path {
        crate::text!(
            128,
            "/local/domain/{}/backend/vbd/{}/{}",
            self.backend,
            self.frontend,
            self.vdev
        )
    }
}

/// `dir/name`.
pub fn node(dir: &Path, name: &str) -> Path {
    crate::text!(128, "{}/{}", dir.as_str(), name)
}

/// The node a backend waits for: the toolstack names the device it is to serve there.
pub fn attach_node(backend: u16) -> Path {
    crate::text!(128, "/local/domain/{backend}/backend/vbd/attach")
}

/// The toolstack's part (dom0 only may write in two domains' directories): create both
/// directories of `device`, both ends in state 1, then tell the backend.
pub fn create_vbd(device: &Device) -> Result<(), i64> {
    let front = device.frontend_dir();
    let back = device.backend_dir();
    let writes: [(Path, Text<128>); 7] = [
        (
            node(&front, "backend"),
            crate::text!(128, "{}", back.as_str()),
        ),
        (
            node(&front, "backend-id"),
            crate::text!(128, "{}", device.backend),
        ),
        (node(&front, "state"), crate::text!(128, "1")),
        (
            node(&back, "frontend"),
            crate::text!(128, "{}", front.as_str()),
        ),
        (
            node(&back, "frontend-id"),
            crate::text!(128, "{}", device.frontend),
        ),
        (node(&back, "state"), crate::text!(128, "1")),
        (
            attach_node(device.backend),
            crate::text!(128, "{}/{}", device.frontend, device.vdev),
        ),
    ];
    for (path, value) in &writes {
        check(store::write(path.as_str(), value.as_str()))?;
    }
    Ok(())
}

/// The device the toolstack attached to `backend` (waiting until it does).
pub fn wait_for_attach(backend: u16) -> Result<Device, i64> {
    let mut buffer = [0u8; 32];
    let value = store::wait(attach_node(backend).as_str(), &mut buffer)?;
    let bad = traplab_abi::hypercall::error::EINVAL;
    let (frontend, vdev) = value.split_once('/').ok_or(bad)?;
    Ok(Device {
        frontend: frontend.parse().map_err(|_| bad)?,
        backend,
        vdev: vdev.parse().map_err(|_| bad)?,
    })
}

/// Set our end's state (`dir` is our own directory).
pub fn set_state(dir: &Path, state: State) -> Result<(), i64> {
    check(store::write(node(dir, "state").as_str(), state.as_text()))
}

/// The other end's state now.
pub fn read_state(dir: &Path) -> State {
    let mut buffer = [0u8; 8];
    match store::read(node(dir, "state").as_str(), &mut buffer) {
        Ok(text) => State::from_text(text),
        Err(_) => State::Unknown,
    }
}

/// Wait (blocked, `store_watch`) until the state in `dir` is `wanted` or later; the state
/// it reached. An end that closes (Closing, Closed) while we wait for a state before those
/// has given up on the device: ENODEV, as Linux's blkfront gives up on a backend that closes
/// before it connected (`blkfront_closing`), rather than taking the close for the state it
/// waited for.
///
/// The watch waits for the value the store holds to change, as the store holds it: a value
/// that names no state (garbage, or Xen's 7 and 8, Reconfiguring and Reconfigured, which
/// this driver does not use) is `Unknown`, and watching for a change from `Unknown`'s own
/// text would return at once, again and again, without ever blocking.
pub fn wait_for_state(dir: &Path, wanted: State) -> Result<State, i64> {
    let path = node(dir, "state");
    let last = watch_until(path.as_str(), |text| State::from_text(text) >= wanted)?;
    let known = State::from_text(last.as_str());
    if known >= State::Closing && wanted < State::Closing {
        return Err(traplab_abi::hypercall::error::ENODEV);
    }
    Ok(known)
}

/// Has domain `id` ended (the store's `@releaseDomain` lists it)?
pub fn released(id: u16) -> bool {
    let mut buffer = [0u8; traplab_abi::store::VALUE_MAX as usize];
    store::read(RELEASE_DOMAIN, &mut buffer)
        .is_ok_and(|ended| traplab_abi::store::released(ended, id))
}

/// Wait (blocked) until domain `id` has ended, as a toolstack waits for `@releaseDomain`.
pub fn wait_for_release(id: u16) -> Result<(), i64> {
    watch_until(RELEASE_DOMAIN, |ended| {
        traplab_abi::store::released(ended, id)
    })?;
    Ok(())
}

/// The longest value the store keeps, and room for the NUL that ends a watched one.
const WHOLE: usize = traplab_abi::store::VALUE_MAX as usize + 1;

/// The value of the node at `path` once `done` says yes to it: read now, then watched
/// (`store_watch`, blocked) from one value to the next. A node not written yet is watched
/// until it appears. The buffers hold the whole value, so that what is watched is the
/// value the store holds.
fn watch_until(path: &str, done: impl Fn(&str) -> bool) -> Result<Text<WHOLE>, i64> {
    let mut buffer = [0u8; WHOLE];
    let mut last: Text<WHOLE> = match store::read(path, &mut buffer) {
        Ok(text) => Text::<WHOLE>::from_args(format_args!("{text}")),
        Err(_) => Text::new(),
    };
    while !done(last.as_str()) {
        let mut buffer = [0u8; WHOLE];
        let text = store::watch(path, last.as_str(), &mut buffer)?;
        last = Text::<WHOLE>::from_args(format_args!("{text}"));
    }
    Ok(last)
}

/// Read a number from `dir/name` (waiting for it to appear).
pub fn read_number(dir: &Path, name: &str) -> Result<u64, i64> {
    let mut buffer = [0u8; 24];
    number(store::wait(node(dir, name).as_str(), &mut buffer)?)
}

/// Read a number the other end has published already (`dir/name`, read once, not waited
/// for): `EINVAL` when it is not there or not a number.
pub fn read_published_number(dir: &Path, name: &str) -> Result<u64, i64> {
    let mut buffer = [0u8; 24];
    let text = store::read(node(dir, name).as_str(), &mut buffer)
        .map_err(|_| traplab_abi::hypercall::error::EINVAL)?;
    number(text)
}

/// A node's text as a number (`EINVAL` when it is none).
fn number(text: &str) -> Result<u64, i64> {
    text.parse()
        .map_err(|_| traplab_abi::hypercall::error::EINVAL)
}

/// Write a number to `dir/name`.
pub fn write_number(dir: &Path, name: &str, value: u64) -> Result<(), i64> {
    check(store::write(
        node(dir, name).as_str(),
        crate::text!(24, "{value}").as_str(),
    ))
}

fn check(result: i64) -> Result<(), i64> {
    if result < 0 { Err(result) } else { Ok(()) }
}
