//! The inputs and outputs tables of each Terraform README, rendered from
//! `variables.tf` and `outputs.tf` (the layout terraform-docs uses), so a
//! test fails when the two drift apart. Also enforces that every variable
//! is typed and described and every output described.
//!
//! To rewrite the tables after changing a module:
//! `TF_DOCS_UPDATE=1 cargo test -p xtask readmes_match`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use super::hcl_model::{TfModule, as_str, attr, blocks, source};

pub const BEGIN: &str = "<!-- BEGIN_TF_DOCS -->";
pub const END: &str = "<!-- END_TF_DOCS -->";

/// One row of the inputs table.
#[derive(Debug, PartialEq)]
pub struct Input {
    pub name: String,
    pub description: String,
    pub type_expr: String,
    pub default: Option<String>,
    pub sensitive: bool,
    pub ephemeral: bool,
    pub validated: bool,
}

/// One row of the outputs table.
#[derive(Debug, PartialEq)]
pub struct Output {
    pub name: String,
    pub description: String,
}

/// The inputs of a module; every variable must have a type and a
/// description.
pub fn inputs(module: &TfModule) -> Result<Vec<Input>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (name, block) in module.variables() {
        let description = attr(&block.body, "description").and_then(as_str);
        let type_expr = attr(&block.body, "type");
        match (description, type_expr) {
            (Some(d), Some(t)) if !d.trim().is_empty() => out.push(Input {
                name: name.to_owned(),
                description: d.to_owned(),
                type_expr: source(t),
                default: attr(&block.body, "default").map(source),
                sensitive: is_true(attr(&block.body, "sensitive")),
                ephemeral: is_true(attr(&block.body, "ephemeral")),
                validated: blocks(&block.body, "validation").next().is_some(),
            }),
            _ => missing.push(name.to_owned()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: variables without a type or a description: {}",
            module.dir.display(),
            missing.join(", ")
        );
    }
    Ok(out)
}

/// The outputs of a module; every output must have a description.
pub fn outputs(module: &TfModule) -> Result<Vec<Output>> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (name, block) in module.outputs() {
        match attr(&block.body, "description").and_then(as_str) {
            Some(d) if !d.trim().is_empty() => out.push(Output {
                name: name.to_owned(),
                description: d.to_owned(),
            }),
            _ => missing.push(name.to_owned()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: outputs without a description: {}",
            module.dir.display(),
            missing.join(", ")
        );
    }
    Ok(out)
}

fn is_true(expr: Option<&hcl::Expression>) -> bool {
    matches!(expr, Some(hcl::Expression::Bool(true)))
}

/// Markdown table cells hold one line and no bare `|`.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Description text: `<` and `>` would be taken for HTML outside code
/// spans.
fn prose(text: &str) -> String {
    cell(text)
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 0 {
                part.replace('<', "&lt;").replace('>', "&gt;")
            } else {
                part.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

fn code(text: &str) -> String {
    format!("`{}`", cell(text))
}

/// The generated section, markers included.
pub fn render(inputs: &[Input], outputs: &[Output]) -> String {
    let mut md = String::new();
    md.push_str(BEGIN);
    md.push_str("\n## Inputs\n\n");
    if inputs.is_empty() {
        md.push_str("No inputs.\n");
    } else {
        md.push_str("| Name | Description | Type | Default | Required |\n");
        md.push_str("|------|-------------|------|---------|:--------:|\n");
        for input in inputs {
            let mut type_cell = code(&input.type_expr);
            for (flag, word) in [
                (input.sensitive, "sensitive"),
                (input.ephemeral, "ephemeral"),
            ] {
                if flag {
                    type_cell.push_str(&format!(" ({word})"));
                }
            }
            let (default, required) = match &input.default {
                Some(d) => (code(d), "no"),
                None => ("n/a".to_owned(), "yes"),
            };
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                code(&input.name),
                prose(&input.description),
                type_cell,
                default,
                required
            ));
        }
    }
    md.push_str("\n## Outputs\n\n");
    if outputs.is_empty() {
        md.push_str("No outputs.\n");
    } else {
        md.push_str("| Name | Description |\n");
        md.push_str("|------|-------------|\n");
        for output in outputs {
            md.push_str(&format!(
                "| {} | {} |\n",
                code(&output.name),
                prose(&output.description)
            ));
        }
    }
    md.push_str(END);
    md
}

/// The README's generated section, between the markers (inclusive).
fn section(readme: &str) -> Option<(usize, usize)> {
    let start = readme.find(BEGIN)?;
    let end = readme[start..].find(END)? + start + END.len();
    Some((start, end))
}

/// What a README's tables should be, and what they are.
pub struct Sync {
    pub expected: String,
    pub actual: Option<String>,
}

/// Compares the README of `dir` with its `.tf` files.
pub fn compare(dir: &Path) -> Result<Sync> {
    let module = TfModule::load(dir)?;
    let expected = render(&inputs(&module)?, &outputs(&module)?);
    let readme_path = dir.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    let actual = section(&readme).map(|(s, e)| readme[s..e].to_owned());
    Ok(Sync { expected, actual })
}

/// Fails with the differing rows when the README of `dir` is out of date.
pub fn check(dir: &Path) -> Result<()> {
    let sync = compare(dir)?;
    let readme = dir.join("README.md");
    let Some(actual) = sync.actual else {
        bail!(
            "{} has no {BEGIN} ... {END} section; run `TF_DOCS_UPDATE=1 cargo test -p xtask readmes_match`",
            readme.display()
        );
    };
    if actual == sync.expected {
        return Ok(());
    }
    let actual_lines: Vec<&str> = actual.lines().collect();
    let expected_lines: Vec<&str> = sync.expected.lines().collect();
    let mut diff = String::new();
    for line in &expected_lines {
        if !actual_lines.contains(line) {
            diff.push_str(&format!("\n  + {line}"));
        }
    }
    for line in &actual_lines {
        if !expected_lines.contains(line) {
            diff.push_str(&format!("\n  - {line}"));
        }
    }
    if diff.is_empty() {
        diff.push_str("\n  (same rows, different order)");
    }
    bail!(
        "{} tables differ from the .tf files (+ expected, - in README):{diff}\nrun `TF_DOCS_UPDATE=1 cargo test -p xtask readmes_match` to rewrite them",
        readme.display()
    )
}

/// Rewrites the README's generated section of `dir` (appending it when
/// absent).
#[cfg(test)]
pub fn update(dir: &Path) -> Result<()> {
    let sync = compare(dir)?;
    let path = dir.join("README.md");
    let readme = std::fs::read_to_string(&path)?;
    let new = match section(&readme) {
        Some((s, e)) => format!("{}{}{}", &readme[..s], sync.expected, &readme[e..]),
        None => format!("{}\n{}\n", readme.trim_end(), sync.expected),
    };
    if new != readme {
        std::fs::write(&path, new)?;
    }
    Ok(())
}

/// The directories whose README carries generated tables.
pub const DOCUMENTED: &[&str] = &[
    "terraform/modules/aws",
    "terraform/modules/gcp",
    "terraform/examples/aws",
    "terraform/examples/gcp",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::terraform::repo_root;

    #[test]
    fn readmes_match_the_code() {
        let update = std::env::var_os("TF_DOCS_UPDATE").is_some();
        let mut failures = Vec::new();
        for dir in DOCUMENTED {
            let dir = repo_root().join(dir);
            if update {
                update_or_panic(&dir);
            }
            if let Err(e) = check(&dir) {
                failures.push(format!("{e:#}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    fn update_or_panic(dir: &Path) {
        if let Err(e) = update(dir) {
            panic!("updating {}: {e:#}", dir.display());
        }
    }

    fn module(variables: &str, outputs: &str) -> TfModule {
        let sources = vec![
            ("variables.tf".to_owned(), variables.to_owned()),
            ("outputs.tf".to_owned(), outputs.to_owned()),
        ];
        match TfModule::from_sources(Path::new("fixture"), &sources) {
            Ok(m) => m,
            Err(e) => panic!("fixture does not parse: {e:#}"),
        }
    }

    #[test]
    fn renders_types_defaults_and_flags_on_one_line() {
        let m = module(
            r#"
variable "cidrs" {
  description = "Blocks | with a pipe"
  type        = list(string)
  default     = ["0.0.0.0/0"]
}
variable "token" {
  description = "A secret"
  type        = string
  sensitive   = true
  ephemeral   = true
}
"#,
            r#"
output "url" {
  description = "Where <x> `<y>`"
  value       = "x"
}
"#,
        );
        let md = render(
            &inputs(&m).unwrap_or_default(),
            &outputs(&m).unwrap_or_default(),
        );
        assert!(
            md.contains(
                r#"| `cidrs` | Blocks \| with a pipe | `list(string)` | `["0.0.0.0/0"]` | no |"#
            ),
            "{md}"
        );
        assert!(
            md.contains("| `token` | A secret | `string` (sensitive) (ephemeral) | n/a | yes |"),
            "{md}"
        );
        assert!(md.contains("| `url` | Where &lt;x&gt; `<y>` |"), "{md}");
    }

    #[test]
    fn a_variable_without_description_or_type_is_an_error() {
        let m = module(
            r#"
variable "untyped" {
  description = "No type"
}
variable "undescribed" {
  type = string
}
"#,
            "",
        );
        let err = match inputs(&m) {
            Ok(_) => panic!("accepted variables without type or description"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("untyped") && err.contains("undescribed"),
            "{err}"
        );
    }

    #[test]
    fn an_output_without_description_is_an_error() {
        let m = module("", "output \"bare\" {\n  value = 1\n}\n");
        assert!(outputs(&m).is_err());
    }

    #[test]
    fn a_stale_readme_is_reported_with_the_missing_row() {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let write = |name: &str, text: &str| {
            if let Err(e) = std::fs::write(dir.path().join(name), text) {
                panic!("writing {name}: {e}");
            }
        };
        write(
            "variables.tf",
            "variable \"a\" {\n  description = \"A\"\n  type = string\n}\n",
        );
        write("outputs.tf", "");
        write("README.md", "# x\n");
        assert!(check(dir.path()).is_err(), "README without tables passed");
        if let Err(e) = update(dir.path()) {
            panic!("update: {e:#}");
        }
        if let Err(e) = check(dir.path()) {
            panic!("freshly updated README fails: {e:#}");
        }
        write(
            "variables.tf",
            "variable \"a\" {\n  description = \"A\"\n  type = string\n}\nvariable \"b\" {\n  description = \"B\"\n  type = number\n  default = 3\n}\n",
        );
        let err = match check(dir.path()) {
            Ok(()) => panic!("stale README passed"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("+ | `b` | B | `number` | `3` | no |"), "{err}");
    }
}
