//! The query part of a cloud source URI (`?region=…&jsonKey=…`): known
//! parameters only, each at most once, never empty. A typo such as
//! `versionstage=` must fail at start-up, not silently read AWSCURRENT.

use std::collections::BTreeMap;

use super::SourceError;

/// Splits `rest` (the URI after its scheme) at the first `?`.
pub(super) fn split(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    }
}

/// The parameters of `query`, checked against `allowed`.
pub(super) fn parse(
    uri: &str,
    query: Option<&str>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, SourceError> {
    let bad = |detail: String| SourceError::BadUri {
        uri: uri.to_owned(),
        detail,
    };
    let mut params = BTreeMap::new();
    let Some(query) = query else {
        return Ok(params);
    };
    if query.contains('#') {
        return Err(bad("a fragment (#…) is not allowed".into()));
    }
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if !allowed.contains(&key.as_ref()) {
            return Err(bad(format!(
                "unknown parameter {key:?}; expected {}",
                list(allowed)
            )));
        }
        if value.trim().is_empty() {
            return Err(bad(format!("parameter {key:?} is empty")));
        }
        if params
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(bad(format!("parameter {key:?} is given twice")));
        }
    }
    Ok(params)
}

fn list(names: &[&str]) -> String {
    match names {
        [] => "none".into(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_parameters_pass_and_the_rest_fail_clearly() {
        let allowed = ["region", "jsonKey"];
        let p = parse("u", Some("region=eu-west-1&jsonKey=a%20b"), &allowed).unwrap();
        assert_eq!(p["region"], "eu-west-1");
        assert_eq!(p["jsonKey"], "a b");
        assert!(parse("u", None, &allowed).unwrap().is_empty());
        for (query, needle) in [
            (
                "versionstage=X",
                "unknown parameter \"versionstage\"; expected region or jsonKey",
            ),
            ("region=", "\"region\" is empty"),
            ("region=a&region=b", "given twice"),
            ("region=a#frag", "fragment"),
        ] {
            let e = parse("u", Some(query), &allowed).unwrap_err().to_string();
            assert!(e.contains(needle), "{query}: {e}");
        }
        assert_eq!(split("a/b?x=1"), ("a/b", Some("x=1")));
        assert_eq!(split("a/b"), ("a/b", None));
    }
}
