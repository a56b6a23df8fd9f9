//! Which robot servers a ProviderConfig may point the controller at
//! (`--allowed-endpoints`). Anyone who can write a ProviderConfig in the
//! control plane could otherwise aim the controller at any address inside
//! the private network.

use url::Url;

/// URL prefixes a ProviderConfig endpoint must fall under, or any URL
/// (`*`, said explicitly).
#[derive(Clone, Debug)]
pub struct AllowedEndpoints {
    /// `None`: any endpoint.
    prefixes: Option<Vec<Url>>,
}

impl AllowedEndpoints {
    /// Parses a comma-separated list of `http(s)://host[:port][/path]`, or
    /// `*`. Nothing at all is refused: the default fails closed.
    pub fn parse(list: Option<&str>) -> Result<Self, String> {
        let list = list.map(str::trim).unwrap_or_default();
        if list == "*" {
            return Ok(Self { prefixes: None });
        }
        let mut prefixes = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let url = Url::parse(item).map_err(|e| format!("allowed endpoint {item:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "allowed endpoint {item:?} must be an http or https URL with a host"
                ));
            }
            prefixes.push(url);
        }
        if prefixes.is_empty() {
            return Err(
                "is required: the robot server URL(s) ProviderConfigs may point at, \
                 comma-separated (or '*' for any, which lets whoever writes a ProviderConfig \
                 aim the controller at any address)"
                    .into(),
            );
        }
        Ok(Self {
            prefixes: Some(prefixes),
        })
    }

    /// Whether any endpoint is allowed (`*`).
    pub fn allows_any(&self) -> bool {
        self.prefixes.is_none()
    }

    /// Whether `endpoint` is under one of the prefixes: same scheme, host
    /// and port, and a path that starts at a segment boundary of the prefix.
    pub fn check(&self, endpoint: &str) -> Result<(), String> {
        let url = Url::parse(endpoint).map_err(|e| format!("endpoint is not a URL: {e}"))?;
        let Some(prefixes) = &self.prefixes else {
            return Ok(());
        };
        let allowed = prefixes.iter().any(|p| {
            p.scheme() == url.scheme()
                && p.host_str() == url.host_str()
                && p.port_or_known_default() == url.port_or_known_default()
                && path_under(url.path(), p.path())
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "endpoint {}://{}{} is not among the controller's allowed endpoints",
                url.scheme(),
                url.host_str().unwrap_or_default(),
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            ))
        }
    }
}

fn path_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || path.starts_with(prefix) && path[prefix.len()..].starts_with('/')
        || prefix.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_refused_and_only_a_star_allows_everything() {
        for missing in [None, Some(""), Some(" , ")] {
            let e = AllowedEndpoints::parse(missing).unwrap_err();
            assert!(e.contains("is required"), "{e}");
        }
        let a = AllowedEndpoints::parse(Some(" * ")).unwrap();
        assert!(a.allows_any());
        assert!(a.check("http://anything:1").is_ok());
        assert!(a.check("not a url").is_err());
    }

    #[test]
    fn prefixes_match_on_origin_and_path_segments() {
        let a = AllowedEndpoints::parse(Some("http://robots.internal:9090, https://r.example/api"))
            .unwrap();
        assert!(!a.allows_any());
        assert!(a.check("http://robots.internal:9090").is_ok());
        assert!(a.check("http://robots.internal:9090/").is_ok());
        assert!(a.check("https://r.example/api/v2").is_ok());
        assert!(a.check("https://r.example:443/api").is_ok());
        assert!(a.check("https://r.example/apiary").is_err());
        assert!(a.check("http://robots.internal:9091").is_err());
        assert!(a.check("https://robots.internal:9090").is_err());
        assert!(a.check("http://metadata.google.internal").is_err());
        let err = a.check("http://10.0.0.1:22/x?token=s3cret").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(AllowedEndpoints::parse(Some("ftp://x")).is_err());
        assert!(AllowedEndpoints::parse(Some("not a url")).is_err());
        assert!(AllowedEndpoints::parse(Some("*,http://x")).is_err());
    }
}
