//! Which robot servers a ProviderConfig may point the controller at
//! (`--allowed-endpoints`). Anyone who can write a ProviderConfig in the
//! control plane could otherwise aim the controller at any address inside
//! the private network.

use url::Url;

/// URL prefixes a ProviderConfig endpoint must fall under; empty allows all.
#[derive(Clone, Debug, Default)]
pub struct AllowedEndpoints {
    prefixes: Vec<Url>,
}

impl AllowedEndpoints {
    /// Parses a comma-separated list of `http(s)://host[:port][/path]`.
    pub fn parse(list: &str) -> Result<Self, String> {
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
        Ok(Self { prefixes })
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether `endpoint` is under one of the prefixes: same scheme, host
    /// and port, and a path that starts at a segment boundary of the prefix.
    pub fn check(&self, endpoint: &str) -> Result<(), String> {
        if self.prefixes.is_empty() {
            return Ok(());
        }
        let url = Url::parse(endpoint).map_err(|e| format!("endpoint is not a URL: {e}"))?;
        let allowed = self.prefixes.iter().any(|p| {
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
    fn empty_list_allows_everything() {
        let a = AllowedEndpoints::parse(" , ").unwrap();
        assert!(a.is_empty());
        assert!(a.check("http://anything:1").is_ok());
    }

    #[test]
    fn prefixes_match_on_origin_and_path_segments() {
        let a =
            AllowedEndpoints::parse("http://robots.internal:9090, https://r.example/api").unwrap();
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
        assert!(AllowedEndpoints::parse("ftp://x").is_err());
        assert!(AllowedEndpoints::parse("not a url").is_err());
    }
}
