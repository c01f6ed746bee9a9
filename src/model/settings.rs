//! Per-service settings of the key model: plan quotas, CORS origins.

use crate::model::ContentOp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One owner's share of a CMS's settings: the origins and public operations it asks for. The
/// CMS's effective settings are the union of every owner's and its unowned base.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnedSettings {
    #[serde(default)]
    pub cors: BTreeSet<String>,
    /// Public operations by API; an API without any is absent.
    #[serde(default)]
    pub public: BTreeMap<String, BTreeSet<ContentOp>>,
}

impl OwnedSettings {
    /// Whether it asks for anything (an origin, a public operation).
    pub fn has_any(&self) -> bool {
        !self.cors.is_empty() || self.public.values().any(|ops| !ops.is_empty())
    }
}

/// A CMS pricing tier (`spec.plan`, `--plan`): microCMS's quotas on the number of API keys.
/// Named `Tier` in the code so that `Plan` means one thing: the diff (`plan::Plan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Hobby,
    Team,
    Business,
    Enterprise,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Self::Hobby, Self::Team, Self::Business, Self::Enterprise];

    pub fn key_limit(self) -> usize {
        match self {
            Self::Hobby => 1,
            Self::Team => 3,
            Self::Business => 10,
            Self::Enterprise => 20,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hobby => "hobby",
            Self::Team => "team",
            Self::Business => "business",
            Self::Enterprise => "enterprise",
        }
    }
}

impl std::str::FromStr for Tier {
    type Err = String;

    fn from_str(s: &str) -> Result<Tier, String> {
        Tier::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("'{s}' is not a plan (hobby, team, business, enterprise)"))
    }
}

/// A CMS endpoint: `http://` or `https://`, a host, maybe a port and a path, nothing that would
/// change the requests keyward builds on it (`?`, `#`) and no credentials (`user:pass@`): a
/// credential goes in a Secret or an environment variable, never in a URL that is printed and
/// logged. The reason never repeats the endpoint (it could hold a password).
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| "must start with http:// or https://".to_owned())?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "holds a credential (user:password@); give it as a Secret or an environment variable"
                .to_owned(),
        );
    }
    if url.contains(['?', '#']) {
        return Err("has a query or a fragment ('?' or '#'); give the base URL only".to_owned());
    }
    if authority.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("is not a URL with a host".to_owned());
    }
    if endpoint_host(url)
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        .is_some_and(is_metadata_address)
    {
        return Err("is a link-local (cloud metadata) address; it is never called".to_owned());
    }
    Ok(())
}

/// The host of an `http(s)://` URL: a name, or an IP address (without IPv6's brackets).
pub fn endpoint_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next();
    }
    authority.split(':').next().filter(|h| !h.is_empty())
}

/// Link-local addresses (IPv4 169.254.0.0/16, IPv6 fe80::/10, IPv4 in IPv6) and the cloud
/// instance metadata services outside them (AWS's fd00:ec2::254, Alibaba's 100.100.100.200):
/// never a CMS, and where a node's credentials are served.
pub fn is_metadata_address(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let v4 = |a: Ipv4Addr| a.is_link_local() || a == Ipv4Addr::new(100, 100, 100, 200);
    match ip {
        IpAddr::V4(a) => v4(a),
        IpAddr::V6(a) => {
            (a.segments()[0] & 0xffc0) == 0xfe80
                || a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || a.to_ipv4_mapped().is_some_and(v4)
        }
    }
}

/// `*`, or `scheme://host[:port]` with an http(s) scheme and nothing after the authority, as
/// a browser sends it. The reason does not repeat the origin (the caller may show it).
pub fn check_origin(o: &str) -> Result<(), String> {
    if o == "*" {
        return Ok(());
    }
    // A browser sends an origin one way only; any other spelling would never match.
    let not_sent = "is not an origin as a browser sends it:";
    if o.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("{not_sent} scheme and host are lowercase"));
    }
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or_else(|| "is not an origin: it must start with http:// or https://".to_owned())?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
        _ => (rest, None),
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '[' | ']' | ':'))
    {
        return Err("is not an origin: expected scheme://host[:port] with no path".to_owned());
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err("has an invalid port".to_owned());
        }
    }
    if host.ends_with('.') {
        return Err(format!(
            "{not_sent} write the host without its trailing dot"
        ));
    }
    let default_port = if o.starts_with("https://") {
        "443"
    } else {
        "80"
    };
    if port == Some(default_port) {
        return Err(format!(
            "{not_sent} leave out the scheme's default port (:{default_port})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in [
            "http://cms:8780",
            "https://cms.example.com/base/",
            "http://[::1]:80",
        ] {
            check_endpoint(ok).unwrap();
        }
        assert_eq!(endpoint_host("http://[::1]:80/x"), Some("::1"));
        assert_eq!(
            endpoint_host("https://cms.example.com:8443/a"),
            Some("cms.example.com")
        );
        assert_eq!(endpoint_host("http://10.1.2.3"), Some("10.1.2.3"));
        for (bad, why) in [
            ("https://user:s3cret@cms", "credential"),
            ("https://token@cms/x", "credential"),
            ("https://cms/x?y=1", "query"),
            ("https://cms#frag", "fragment"),
            ("ftp://cms", "http://"),
            ("https:///x", "host"),
            ("https://cms /x", "host"),
            ("http://169.254.169.254/latest", "metadata"),
            ("http://[fd00:ec2::254]/", "metadata"),
            ("http://[fe80::1]:80", "metadata"),
        ] {
            let e = check_endpoint(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("s3cret") && !e.contains("token@"), "{e}");
        }
    }

    #[test]
    fn origins() {
        for ok in [
            "*",
            "https://example.com",
            "http://localhost:3000",
            "https://a.b.c:8443",
        ] {
            check_origin(ok).unwrap();
        }
        for bad in [
            "example.com",
            "https://example.com/",
            "ftp://x",
            "https://",
            "http://x:99999",
            "https://a b",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
        // Spellings a browser never sends: refused, saying how it would be sent.
        for (bad, why) in [
            ("https://Shop.example.com", "lowercase"),
            ("HTTPS://shop.example.com", "lowercase"),
            ("https://shop.example.com:443", "default port (:443)"),
            ("http://shop.example.com:80", "default port (:80)"),
            ("https://shop.example.com.", "trailing dot"),
        ] {
            let e = check_origin(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
