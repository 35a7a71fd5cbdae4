//! Namespaces: every topic, module and pipeline of a tenant is stored
//! under `<tenant>.<name>`, so two tenants may each have an `orders`.
//! The API speaks tenant-local names only: names are qualified on the way
//! in and localized on the way out, lists show only the caller's own
//! resources, and a name of another tenant is simply not found. Tenant
//! names have no dots, so the first dot always ends the tenant.
//!
//! Without tenancy the namespace is empty and names pass unchanged.

/// The names one caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    tenant: Option<String>,
}

impl Namespace {
    /// Everything, unqualified (no tenancy).
    pub fn global() -> Namespace {
        Namespace { tenant: None }
    }

    pub fn tenant(name: &str) -> Namespace {
        Namespace {
            tenant: Some(name.to_string()),
        }
    }

    /// The tenant, when tenancy is on.
    pub fn tenant_name(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The stored name of a tenant-local name.
    pub fn qualify(&self, name: &str) -> String {
        match &self.tenant {
            Some(tenant) => format!("{tenant}.{name}"),
            None => name.to_string(),
        }
    }

    /// The tenant-local name of a stored one, if it is the caller's.
    pub fn localize<'a>(&self, stored: &'a str) -> Option<&'a str> {
        match &self.tenant {
            Some(tenant) => stored.strip_prefix(tenant.as_str())?.strip_prefix('.'),
            None => Some(stored),
        }
    }

    /// A message with stored names turned into the caller's names: every
    /// `<tenant>.` that starts a word loses its prefix.
    pub fn localize_message(&self, message: &str) -> String {
        let Some(tenant) = &self.tenant else {
            return message.to_string();
        };
        let prefix = format!("{tenant}.");
        let mut out = String::with_capacity(message.len());
        let mut rest = message;
        while let Some(at) = rest.find(&prefix) {
            let starts_word = rest[..at]
                .chars()
                .next_back()
                .or_else(|| out.chars().next_back())
                .is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.'));
            out.push_str(&rest[..at]);
            if !starts_word {
                out.push_str(&prefix);
            }
            rest = &rest[at + prefix.len()..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_other_tenants_names_are_not_seen() {
        let acme = Namespace::tenant("acme");
        assert_eq!(acme.qualify("orders.eu"), "acme.orders.eu");
        assert_eq!(acme.localize("acme.orders.eu"), Some("orders.eu"));
        assert_eq!(acme.localize("acmex.orders"), None);
        assert_eq!(acme.localize("globex.orders"), None);
        assert_eq!(
            acme.localize_message("unknown topic \"acme.orders\""),
            "unknown topic \"orders\""
        );
        let a = Namespace::tenant("a");
        assert_eq!(
            a.localize_message("a.t: see data.a.log, a.b/0"),
            "t: see data.a.log, b/0",
            "only prefixes that start a word"
        );
        let global = Namespace::global();
        assert_eq!(global.qualify("orders"), "orders");
        assert_eq!(global.localize("acme.orders"), Some("acme.orders"));
    }
}
