//! The KVM plugin (placeholder, filled in below).

use rewind_ckpt::plugin::Plugin;

pub const NAME: &str = "kvm";

#[derive(Default)]
pub struct Kvm;

impl Plugin for Kvm {
    fn name(&self) -> &'static str {
        NAME
    }
}

/// Make `--plugin kvm` known.
pub fn register() {
    rewind_ckpt::plugin::register(NAME, || Box::new(Kvm));
}
