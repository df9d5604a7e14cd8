//! The lab's hypervisor settings (fw_cfg `opt/traplab/settings`; the names and their meaning
//! are in `traplab_abi::settings`). Read once at boot.

use spin::Once;

#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    pub intercept_cr: bool,
    pub intercept_dr: bool,
    pub intercept_rdtsc: bool,
    pub intercept_invlpg: bool,
    pub intercept_pause: bool,
    pub lazy_memory: bool,
    pub passthrough_fs_base: bool,
    pub bench_bare: bool,
    pub pc_testdev: bool,
}

static SETTINGS: Once<Settings> = Once::new();

/// Parse `intercept-cr,lazy-memory,…`; an unknown name is an error naming it.
pub fn parse(text: &str) -> Result<Settings, &str> {
    let mut settings = Settings::default();
    for name in text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let flag = match name {
            "intercept-cr" => &mut settings.intercept_cr,
            "intercept-dr" => &mut settings.intercept_dr,
            "intercept-rdtsc" => &mut settings.intercept_rdtsc,
            "intercept-invlpg" => &mut settings.intercept_invlpg,
            "intercept-pause" => &mut settings.intercept_pause,
            "lazy-memory" => &mut settings.lazy_memory,
            "passthrough-fs-base" => &mut settings.passthrough_fs_base,
            "bench-bare" => &mut settings.bench_bare,
            "pc-testdev" => &mut settings.pc_testdev,
            unknown => return Err(unknown),
        };
        *flag = true;
    }
    Ok(settings)
}

pub fn init(settings: Settings) {
    SETTINGS.call_once(|| settings);
}

/// The settings (all off until `init`).
pub fn get() -> Settings {
    SETTINGS.get().copied().unwrap_or_default()
}
