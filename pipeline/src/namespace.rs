//! Pipelines in a tenant's namespace: the spec and the status list the
//! names they hold in one method each ([`PipelineSpec::for_each_name`],
//! [`PipelineStatus::for_each_name`]), and qualifying or localizing goes
//! through those, so a name-bearing field added to either is namespaced
//! as soon as it is listed there, next to its definition.

use weir_tenancy::Namespace;

use crate::{PipelineSpec, PipelineStatus};

impl PipelineSpec {
    /// The spec with every name stored in `ns`.
    pub fn qualified(mut self, ns: &Namespace) -> PipelineSpec {
        self.for_each_name(|name| *name = ns.qualify(name));
        self
    }

    /// The spec as its tenant wrote it.
    pub fn localized(mut self, ns: &Namespace) -> PipelineSpec {
        self.for_each_name(|name| localize(ns, name));
        self
    }
}

impl PipelineStatus {
    /// The status in the names of `ns` (messages included).
    pub fn localized(mut self, ns: &Namespace) -> PipelineStatus {
        self.for_each_name(|name| localize(ns, name));
        self.for_each_message(|message| *message = ns.localize_message(message));
        self
    }
}

fn localize(ns: &Namespace, name: &mut String) {
    if let Some(local) = ns.localize(name) {
        *name = local.to_string();
    }
}
