//! Names users give to what they own, and the rules they follow: one
//! place, so the HTTP API, the Kafka listener, the module store and the
//! pipelines accept exactly the same names. (Topic names are the log's:
//! see `weir-log`.)

/// Checks a tenant name: 1 to 32 characters of `[a-z0-9-]`, starting with
/// a letter or digit (it prefixes its resources' names, so no dots).
pub fn check_tenant_name(name: &str) -> Result<(), String> {
    let valid = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "tenant name {:?} must be 1 to 32 characters of a-z, 0-9 and '-', not starting with '-'",
            name.chars().take(40).collect::<String>()
        ))
    }
}

/// Checks a pipeline or module name: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{what} name {:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
            name.chars().take(80).collect::<String>()
        ))
    }
}

/// Checks a stored name: a name as `check_name` wants it, optionally
/// qualified by its tenant (`tenant.name`, see the tenancy crate's namespaces).
pub fn check_stored_name(what: &str, name: &str) -> Result<(), String> {
    match name.split_once('.') {
        Some((tenant, local)) => {
            check_tenant_name(tenant)?;
            check_name(what, local)
        }
        None => check_name(what, name),
    }
}
