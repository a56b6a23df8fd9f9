//! A Terraform module as parsed HCL: the blocks and attributes the checks
//! look at, plus the little evaluation they need (variable defaults,
//! locals, `count` conditionals). Everything Terraform would resolve at
//! plan time (resource attributes, functions) stays an unevaluated
//! expression.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use hcl::eval::{Context, Evaluate};
use hcl::expr::{Expression, TemplateExpr};
use hcl::structure::{Block, BlockLabel, Body};
use hcl::{Map, Value};

/// The `.tf` files of one directory, parsed.
pub struct TfModule {
    pub dir: PathBuf,
    files: Vec<(String, Body)>,
}

/// A top-level block with two labels (`resource "type" "name"`).
pub struct Labeled<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    pub block: &'a Block,
}

impl TfModule {
    /// Parses every `*.tf` file of `dir` (not `*_override.tf`: those are
    /// test scaffolding, never part of a module).
    pub fn load(dir: &Path) -> Result<Self> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.ends_with(".tf") && !name.ends_with("_override.tf"))
            .collect();
        names.sort();
        if names.is_empty() {
            bail!("{} holds no .tf file", dir.display());
        }
        let mut sources = Vec::new();
        for name in names {
            let path = dir.join(&name);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            sources.push((name, text));
        }
        Self::from_sources(dir, &sources)
    }

    /// Parses sources given as `(file name, text)`, e.g. a module with one
    /// attribute changed by a test.
    pub fn from_sources(dir: &Path, sources: &[(String, String)]) -> Result<Self> {
        let mut files = Vec::new();
        for (name, text) in sources {
            let body = hcl::parse(text)
                .with_context(|| format!("parsing {}", dir.join(name).display()))?;
            files.push((name.clone(), body));
        }
        Ok(TfModule {
            dir: dir.to_path_buf(),
            files,
        })
    }

    fn top_blocks<'a>(&'a self, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
        self.files
            .iter()
            .flat_map(move |(_, body)| body.blocks().filter(move |b| b.identifier() == ident))
    }

    fn labeled<'a>(&'a self, ident: &'a str) -> impl Iterator<Item = Labeled<'a>> + 'a {
        self.top_blocks(ident).filter_map(|block| {
            Some(Labeled {
                kind: label(block, 0)?,
                name: label(block, 1)?,
                block,
            })
        })
    }

    /// Every `resource` block.
    pub fn resources(&self) -> impl Iterator<Item = Labeled<'_>> + '_ {
        self.labeled("resource")
    }

    /// The `resource "kind" "name"` block.
    pub fn resource(&self, kind: &str, name: &str) -> Result<&Block> {
        self.resources()
            .find(|r| r.kind == kind && r.name == name)
            .map(|r| r.block)
            .with_context(|| format!("no resource {kind}.{name} in {}", self.dir.display()))
    }

    /// `variable` blocks in file order, by name.
    pub fn variables(&self) -> Vec<(&str, &Block)> {
        self.top_blocks("variable")
            .filter_map(|b| Some((label(b, 0)?, b)))
            .collect()
    }

    /// `output` blocks in file order, by name.
    pub fn outputs(&self) -> Vec<(&str, &Block)> {
        self.top_blocks("output")
            .filter_map(|b| Some((label(b, 0)?, b)))
            .collect()
    }

    /// The expression of `local.<name>`.
    pub fn local(&self, name: &str) -> Option<&Expression> {
        self.top_blocks("locals").find_map(|b| attr(&b.body, name))
    }

    /// Follows `local.x` references until the expression is something else.
    pub fn resolve<'a>(&'a self, mut expr: &'a Expression) -> &'a Expression {
        for _ in 0..16 {
            match local_name(expr).and_then(|name| self.local(name)) {
                Some(next) => expr = next,
                None => break,
            }
        }
        expr
    }

    /// The `default` expression of a variable.
    pub fn default_of(&self, variable: &str) -> Option<&Expression> {
        self.variables()
            .into_iter()
            .find(|(name, _)| *name == variable)
            .and_then(|(_, block)| attr(&block.body, "default"))
    }

    /// Evaluates `expr` with `var.*` bound to the variable defaults (and
    /// `overrides`), and `local.*` bound to every local that evaluates
    /// without resources or functions.
    pub fn evaluate(&self, expr: &Expression, overrides: &[(&str, Value)]) -> Result<Value> {
        let mut vars: Map<String, Value> = Map::new();
        for (name, block) in self.variables() {
            if let Some(default) = attr(&block.body, "default")
                && let Ok(value) = default.evaluate(&Context::new())
            {
                vars.insert(name.to_owned(), value);
            }
        }
        for (name, value) in overrides {
            vars.insert((*name).to_owned(), value.clone());
        }
        let locals: Vec<(&str, &Expression)> = self
            .top_blocks("locals")
            .flat_map(|b| b.body.attributes().map(|a| (a.key(), a.expr())))
            .collect();
        // Locals may refer to each other in any order: evaluate what can
        // be, again and again, until a round adds nothing.
        let mut known: Map<String, Value> = Map::new();
        loop {
            let mut ctx = Context::new();
            ctx.declare_var("var", Value::Object(vars.clone()));
            ctx.declare_var("local", Value::Object(known.clone()));
            let before = known.len();
            for (name, expr) in &locals {
                if !known.contains_key(*name)
                    && let Ok(value) = (*expr).evaluate(&ctx)
                {
                    known.insert((*name).to_owned(), value);
                }
            }
            if known.len() == before {
                break;
            }
        }
        let mut ctx = Context::new();
        ctx.declare_var("var", Value::Object(vars));
        ctx.declare_var("local", Value::Object(known));
        expr.evaluate(&ctx)
            .map_err(|e| anyhow::anyhow!("cannot evaluate `{expr}`: {e}"))
    }

    /// How many instances `count` makes of a resource (1 without `count`).
    pub fn count_of(&self, kind: &str, name: &str, overrides: &[(&str, Value)]) -> Result<u64> {
        let block = self.resource(kind, name)?;
        let Some(count) = attr(&block.body, "count") else {
            return Ok(1);
        };
        match self.evaluate(count, overrides)? {
            Value::Number(n) => n
                .as_u64()
                .with_context(|| format!("{kind}.{name}: count is {n}")),
            other => bail!("{kind}.{name}: count is not a number: {other}"),
        }
    }
}

/// The label at `index` of a block, quoted or bare.
pub fn label(block: &Block, index: usize) -> Option<&str> {
    block.labels.get(index).map(|l| match l {
        BlockLabel::String(s) => s.as_str(),
        BlockLabel::Identifier(i) => i.as_str(),
    })
}

/// The attribute `key` of a body.
pub fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

/// The nested blocks named `ident` of a body (`dynamic "x"` ones are not
/// included: their content is data, not configuration).
pub fn blocks<'a>(body: &'a Body, ident: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
    body.blocks().filter(move |b| b.identifier() == ident)
}

/// The first block reached by following `path` from `body`.
pub fn block_at<'a>(body: &'a Body, path: &[&str]) -> Option<&'a Block> {
    let (first, rest) = path.split_first()?;
    let found = body.blocks().find(|b| b.identifier() == *first)?;
    if rest.is_empty() {
        Some(found)
    } else {
        block_at(&found.body, rest)
    }
}

/// The attribute at `path`: blocks, then the attribute name last.
pub fn attr_at<'a>(body: &'a Body, path: &[&str]) -> Option<&'a Expression> {
    let (key, blocks_path) = path.split_last()?;
    if blocks_path.is_empty() {
        attr(body, key)
    } else {
        attr(&block_at(body, blocks_path)?.body, key)
    }
}

/// The `content` of `dynamic "<ident>"` blocks, where a module generates
/// repeated blocks (env vars, network interfaces).
pub fn dynamic_contents<'a>(
    body: &'a Body,
    ident: &'a str,
) -> impl Iterator<Item = &'a Block> + 'a {
    blocks(body, "dynamic")
        .filter(move |b| label(b, 0) == Some(ident))
        .filter_map(|b| blocks(&b.body, "content").next())
}

/// A string literal without interpolation.
pub fn as_str(expr: &Expression) -> Option<&str> {
    match expr {
        Expression::String(s) => Some(s),
        Expression::TemplateExpr(t) => match t.as_ref() {
            TemplateExpr::QuotedString(s) if !s.contains("${") => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// `local.<name>` as a bare reference.
fn local_name(expr: &Expression) -> Option<&str> {
    let Expression::Traversal(t) = expr else {
        return None;
    };
    let Expression::Variable(root) = &t.expr else {
        return None;
    };
    match (root.as_str(), t.operators.as_slice()) {
        ("local", [hcl::expr::TraversalOperator::GetAttr(name)]) => Some(name.as_str()),
        _ => None,
    }
}

/// The expression as HCL source on one line, for messages and for
/// "does it refer to X" questions.
pub fn source(expr: &Expression) -> String {
    let mut formatter = hcl::format::Formatter::builder()
        .compact(true)
        .prefer_ident_keys(true)
        .build_vec();
    use hcl::format::Format as _;
    expr.format_string(&mut formatter)
        .unwrap_or_else(|_| expr.to_string())
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The keys of an object expression (e.g. a `locals` map of env vars).
pub fn object_keys(expr: &Expression) -> Vec<String> {
    match expr {
        Expression::Object(object) => object
            .keys()
            .map(|k| match k {
                hcl::expr::ObjectKey::Identifier(i) => i.to_string(),
                hcl::expr::ObjectKey::Expression(e) => {
                    as_str(e).map(str::to_owned).unwrap_or_else(|| source(e))
                }
                other => format!("{other:?}"),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The value of `key` in an object expression.
pub fn object_get<'a>(expr: &'a Expression, key: &str) -> Option<&'a Expression> {
    let Expression::Object(object) = expr else {
        return None;
    };
    object.iter().find_map(|(k, v)| {
        let name = match k {
            hcl::expr::ObjectKey::Identifier(i) => i.as_str(),
            hcl::expr::ObjectKey::Expression(e) => as_str(e)?,
            _ => return None,
        };
        (name == key).then_some(v)
    })
}

/// Source files by name, for tests that change one and re-parse.
#[cfg(test)]
pub fn read_sources(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = std::collections::BTreeMap::<String, String>::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".tf") && !name.ends_with("_override.tf") {
            out.insert(name, std::fs::read_to_string(entry.path())?);
        }
    }
    Ok(out.into_iter().collect())
}
