//! The shared checks of names and addresses, as Istio and Kubernetes make
//! them: DNS labels and names (with or without a wildcard), host patterns,
//! IP subnets and port numbers. Pure functions of one value: every other
//! module may use them, they use nothing of the crate.

use std::net::IpAddr;

/// A DNS name Istio refuses (`validate_domain`, `validate_fqdn`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("domain name {domain:?} too long (max 255)")]
    TooLong { domain: String },
    #[error("empty domain name not allowed")]
    Empty,
    #[error("domain name {domain:?} invalid (label {label:?} invalid)")]
    Label { domain: String, label: String },
    #[error("domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)")]
    NumericTopLevel { domain: String, top: String },
}

/// Neither an IP nor a CIDR block (`validate_subnet`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    #[error("{subnet} is not a valid CIDR block")]
    Cidr { subnet: String },
    #[error("{subnet} is not a valid IP")]
    Ip { subnet: String },
}

/// A port number outside 1..65535 (`port_number`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("port number {number} must be in the range 1..65535")]
pub struct PortError {
    pub number: i64,
}

/// Istio's `ValidatePartialWildCard`: `*` only as the whole first label.
pub fn is_partial_wildcard(host: &str) -> bool {
    host.contains('*') && host.len() != 1 && !host.starts_with("*.")
}

pub fn parse_cidr(ip: &str, prefix: &str) -> Option<(IpAddr, u8)> {
    let ip: IpAddr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let full = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= full).then_some((ip, prefix))
}

/// An IP or CIDR, as `destinationSubnets` takes (Istio's `ValidateIPSubnet`).
pub fn validate_subnet(subnet: &str) -> Result<(), SubnetError> {
    match subnet.split_once('/') {
        Some((ip, prefix)) => parse_cidr(ip, prefix)
            .map(|_| ())
            .ok_or_else(|| SubnetError::Cidr {
                subnet: subnet.to_owned(),
            }),
        None => subnet
            .parse::<IpAddr>()
            .map(|_| ())
            .map_err(|_| SubnetError::Ip {
                subnet: subnet.to_owned(),
            }),
    }
}

/// Istio's `ValidatePort`.
pub fn port_number(number: i64) -> Result<u16, PortError> {
    u16::try_from(number)
        .ok()
        .filter(|number| *number != 0)
        .ok_or(PortError { number })
}

/// Whether `pattern` (a host, `*`, or `*.suffix`) covers `host`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == host || pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => false,
    }
}

/// Istio's `ValidateWildcardDomain`: a DNS name, `*` allowed as (part of)
/// the first label (`*`, `*.example.com`, `*-foo.example.com`).
pub fn validate_domain(domain: &str) -> Result<(), DomainError> {
    dns_preconditions(domain)?;
    let (first, rest) = domain
        .split_once('.')
        .map_or((domain, None), |(first, rest)| (first, Some(rest)));
    let unstarred = first
        .strip_prefix("*-")
        .or_else(|| first.strip_prefix('*'))
        .unwrap_or(first);
    let first_ok = first == "*" || is_dns1123_label_any_case(unstarred);
    if !first_ok {
        return Err(DomainError::Label {
            domain: domain.to_owned(),
            label: first.to_owned(),
        });
    }
    match rest {
        None => Ok(()),
        Some(rest) => dns_labels(domain, rest),
    }
}

/// Istio's `ValidateFQDN`: a DNS name without wildcard.
pub fn validate_fqdn(domain: &str) -> Result<(), DomainError> {
    dns_preconditions(domain)?;
    dns_labels(domain, domain)
}

fn dns_preconditions(domain: &str) -> Result<(), DomainError> {
    if domain.len() > 255 {
        return Err(DomainError::TooLong {
            domain: domain.to_owned(),
        });
    }
    if domain.is_empty() {
        return Err(DomainError::Empty);
    }
    Ok(())
}

/// Istio's `ValidateDNS1123Labels` of `labels`, a part of `domain`.
fn dns_labels(domain: &str, labels: &str) -> Result<(), DomainError> {
    let labels: Vec<&str> = labels.split('.').collect();
    let top = labels.last().copied().unwrap_or_default();
    if top.parse::<i64>().is_ok() {
        return Err(DomainError::NumericTopLevel {
            domain: domain.to_owned(),
            top: top.to_owned(),
        });
    }
    for (i, label) in labels.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i + 1 == labels.len() && label.is_empty() {
            break;
        }
        if !is_dns1123_label_any_case(label) {
            return Err(DomainError::Label {
                domain: domain.to_owned(),
                label: (*label).to_owned(),
            });
        }
    }
    Ok(())
}

/// RFC 1123 label, as Kubernetes checks it: 1-63 of `[a-z0-9-]`, starting
/// and ending with a letter or digit.
pub fn is_dns1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// RFC 1123 subdomain: labels joined by `.`, at most 253 bytes.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

/// Istio's `labels.IsDNS1123Label`: like Kubernetes', but upper case is
/// allowed.
pub fn is_dns1123_label_any_case(label: &str) -> bool {
    is_dns1123_label(&label.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        let cases = [
            ("tcp-echo.local", true),
            ("tcp-echo", true),
            ("*.local", true),
            ("*", true),
            ("istio.io.", true),
            ("", false),
            // Istio's labels are case-insensitive.
            ("Tcp-Echo.local", true),
            ("*-echo.local", true),
            ("*echo.local", true),
            ("tcp_echo.local", false),
            ("a..b", false),
            ("1.2.3.4", false),
            ("a.*.b", false),
        ];
        for (domain, valid) in cases {
            assert_eq!(
                validate_domain(domain).is_ok(),
                valid,
                "{domain:?} should be {}",
                if valid { "valid" } else { "refused" }
            );
        }
    }

    #[test]
    fn host_patterns() {
        let cases = [
            ("a.local", "a.local", true),
            ("*.local", "a.local", true),
            ("*", "a.local", true),
            ("*.local", "local", false),
            ("a.local", "b.local", false),
            ("*.local", "a.remote", false),
        ];
        for (pattern, host, expected) in cases {
            assert_eq!(
                host_matches(pattern, host),
                expected,
                "does {pattern:?} cover {host:?}"
            );
        }
    }
}
