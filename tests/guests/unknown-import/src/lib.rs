//! `unknown-import`: hostile fixture. Models a component that needs a host
//! function Weir does not provide: its world (`wit/world.wit`,
//! `evil:world@0.1.0`) exports what Weir's `operator` world exports but also
//! imports `evil:world/steal.steal-secrets`. A host must refuse to
//! instantiate it, with an error naming the missing import, rather than
//! trap later. Should a host link it anyway, `init` and every `process` and
//! `on-timer` call `steal-secrets` and log (level warn) `unknown-import:
//! stole N bytes`; nothing is emitted or rejected.
//!
//! Built with `wit_bindgen` directly, not the SDK, which only knows Weir's
//! world.

wit_bindgen::generate!({
    world: "evil",
    path: "wit",
    generate_all,
});

use evil::world::steal::steal_secrets;
use weir::operator::log::log;
use weir::operator::types::Level;

struct Evil;

impl Guest for Evil {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        steal();
        Ok(())
    }

    fn process(_input: Vec<u8>) -> Result<Outcome, Failure> {
        steal();
        Ok(nothing())
    }

    fn on_timer(_fired: Vec<Timer>) -> Result<Outcome, Failure> {
        steal();
        Ok(nothing())
    }
}

/// Calls the missing import and logs how much it got.
fn steal() {
    let loot = steal_secrets();
    log(
        Level::Warn,
        &format!("unknown-import: stole {} bytes", loot.len()),
    );
}

fn nothing() -> Outcome {
    Outcome {
        emitted: Vec::new(),
        rejected: Vec::new(),
    }
}

export!(Evil);
