//! Bindings generated from `wit/operator.wit`. Use the SDK's own types and
//! functions instead; these are public for the [`export!`](crate::export) macro.

wit_bindgen::generate!({
    world: "operator",
    path: "../wit",
    pub_export_macro: true,
    export_macro_name: "export_operator_world",
    default_bindings_module: "weir_operator::bindings",
});

pub use weir::operator::types::{Emitted, Rejection};
