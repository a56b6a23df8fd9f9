//! The literal `locals` of a Terraform module, for the packaging check
//! that holds `infra/ecs` against `terraform/modules/aws` (container
//! names). Everything else about the modules is checked by terraform,
//! terraform-docs and checkov themselves.

use std::path::Path;

use anyhow::{Context as _, Result};
use hcl::expr::Expression;

/// The `locals` of every `.tf` file of one directory.
pub struct TfModule {
    locals: Vec<(String, Expression)>,
}

impl TfModule {
    pub fn load(dir: &Path) -> Result<Self> {
        let mut locals = Vec::new();
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "tf"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)?;
            let body: hcl::Body =
                hcl::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            for block in body.blocks().filter(|b| b.identifier() == "locals") {
                for attr in block.body.attributes() {
                    locals.push((attr.key().to_owned(), attr.expr().clone()));
                }
            }
        }
        Ok(TfModule { locals })
    }

    /// The expression of `local.<name>`, as written.
    pub fn local(&self, name: &str) -> Option<&Expression> {
        self.locals.iter().find(|(k, _)| k == name).map(|(_, e)| e)
    }
}

/// A string literal's value.
pub fn as_str(expr: &Expression) -> Option<&str> {
    match expr {
        Expression::String(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_literal_locals_of_the_aws_module() {
        let module = TfModule::load(&super::super::repo_root().join("terraform/modules/aws"))
            .expect("the module parses");
        assert_eq!(
            module.local("server_container").and_then(as_str),
            Some("server")
        );
        assert_eq!(
            module.local("controller_name").and_then(as_str),
            Some("controller")
        );
        assert!(module.local("nope").is_none());
    }
}
