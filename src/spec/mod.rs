//! Reading a pipeline file: TOML with spans, then matrix expansion, params
//! resolution and interpolation into concrete stage instances. Every error is a
//! [`Diagnostic`] that points at the offending text; nothing here runs anything.

pub mod interp;
pub mod raw;
pub mod value;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use toml::Spanned;

use crate::diag::{Diagnostic, did_you_mean};
use crate::registry::{ExpandInput, Registry, default_value};
use interp::{Scope, Scope2, substitute};
use raw::{RawPipeline, RawStage};

/// What a stage does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A shell command (run with `bash -c`), values already substituted.
    Cmd(String),
    /// A built-in kind, run through the binary's hidden stage subcommand.
    Builtin { kind: String, version: u32 },
}

/// One concrete stage instance (after matrix and chain expansion).
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub name: String,
    /// The `[stages.NAME]` table it came from.
    pub template: String,
    pub action: Action,
    /// The params that enter the key: used, own, or declared by its kind.
    pub params: BTreeMap<String, Value>,
    pub matrix: BTreeMap<String, Value>,
    pub deps: Vec<Spanned<String>>,
    pub outs: Vec<Spanned<String>>,
    /// Explicit needs, as written (resolved into edges by the DAG).
    pub needs: Vec<Spanned<String>>,
    pub cpus: u32,
    pub gpus: u32,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub executor: Option<String>,
    pub time: Option<String>,
    pub mem: Option<String>,
    /// Span of the stage's table name, for errors about the stage as a whole.
    pub span: Range<usize>,
}

/// A parsed pipeline file.
#[derive(Debug)]
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    pub source: String,
    pub stages: Vec<StageSpec>,
}

impl Pipeline {
    pub fn diag(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&self.file, &self.source, span, message)
    }
}

/// Reads and expands a pipeline file.
pub fn load(path: &Path, registry: &Registry) -> Result<Pipeline, Diagnostic> {
    let bytes = std::fs::read(path).map_err(|e| {
        Diagnostic::new(path, "", None, format!("cannot read pipeline file: {e}"))
            .with_help("check the path; pipeline files are TOML, e.g. pipelines/table2-cpu.toml")
    })?;
    parse(path, bytes, registry)
}

/// Parses pipeline text already in memory (`path` is used in messages).
pub fn parse(path: &Path, bytes: Vec<u8>, registry: &Registry) -> Result<Pipeline, Diagnostic> {
    let source = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let good = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            // Lossy text is only used to show the location of the first bad byte.
            let prefix_chars = String::from_utf8_lossy(&e.as_bytes()[..good]).len();
            return Err(Diagnostic::new(
                path,
                &lossy,
                Some(prefix_chars..prefix_chars + 1),
                "invalid UTF-8 in pipeline file",
            )
            .with_help("pipeline files must be UTF-8 text"));
        }
    };
    let raw: RawPipeline = toml::from_str(&source).map_err(|e| {
        let mut message = e.message().trim().to_string();
        if message.is_empty() {
            message = "invalid TOML".into();
        }
        Diagnostic::new(path, &source, e.span(), message).with_help(
            "see README.md, section \"Pipeline format\", for the keys a pipeline and a stage accept",
        )
    })?;
    let name = raw.pipeline.get_ref().name.get_ref().clone();
    let stages = Expander {
        file: path,
        source: &source,
        registry,
    }
    .expand(raw)?;
    Ok(Pipeline {
        name,
        file: path.to_path_buf(),
        source,
        stages,
    })
}

struct Expander<'a> {
    file: &'a Path,
    source: &'a str,
    registry: &'a Registry,
}

impl Expander<'_> {
    fn err(&self, span: Range<usize>, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.file, self.source, Some(span), msg)
    }

    /// The span of a reference inside a string value: exact when the string is
    /// written without escapes, else the whole string.
    fn inner_span(&self, s: &Spanned<String>, inner: Range<usize>) -> Range<usize> {
        let span = s.span();
        let written = self.source.get(span.clone()).unwrap_or("");
        let quoted =
            written.len() == s.get_ref().len() + 2 && &written[1..written.len() - 1] == s.get_ref();
        if quoted {
            span.start + 1 + inner.start..span.start + 1 + inner.end
        } else {
            span
        }
    }

    fn expand(&self, raw: RawPipeline) -> Result<Vec<StageSpec>, Diagnostic> {
        let name = raw.pipeline.get_ref().name.get_ref();
        if name.trim().is_empty() {
            return Err(self
                .err(raw.pipeline.get_ref().name.span(), "pipeline name is empty")
                .with_help("give the pipeline a name: name = \"demo\""));
        }
        let globals: BTreeMap<String, Value> = raw
            .params
            .iter()
            .map(|(k, v)| (k.get_ref().clone(), value::canonical(v.get_ref())))
            .collect();
        let mut out: Vec<StageSpec> = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (name, stage) in &raw.stages {
            self.check_name(name)?;
            for combo in self.matrix(stage.get_ref())? {
                for s in self.instance(name, stage, &combo, &globals)? {
                    // Shared chain stages come once per instance: keep one, insist they agree.
                    if let Some(&i) = seen.get(&s.name) {
                        let o = &out[i];
                        let same = o.action == s.action
                            && o.params == s.params
                            && o.deps == s.deps
                            && o.outs == s.outs;
                        if !same {
                            return Err(self.err(s.span.clone(), format!("two definitions of stage `{}` differ", s.name))
                                .with_help("a shared chain stage must have the same params and deps in every instance that shares it; give the instances different names"));
                        }
                        continue;
                    }
                    seen.insert(s.name.clone(), out.len());
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    fn check_name(&self, name: &Spanned<String>) -> Result<(), Diagnostic> {
        let ok = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if ok {
            Ok(())
        } else {
            Err(self.err(name.span(), format!("invalid stage name `{}`", name.get_ref()))
                .with_help("stage names use letters, digits, `_` and `-` (`@` and `/` are reserved for matrix and chain instances)"))
        }
    }

    /// Every combination of the matrix axes (axes in name order, values in file order).
    fn matrix(&self, stage: &RawStage) -> Result<Vec<BTreeMap<String, Value>>, Diagnostic> {
        let mut combos = vec![BTreeMap::new()];
        for (axis, values) in &stage.matrix {
            if values.get_ref().is_empty() {
                return Err(self
                    .err(
                        values.span(),
                        format!("matrix axis `{}` has no values", axis.get_ref()),
                    )
                    .with_help(
                        "give each axis a non-empty list, e.g. net = [\"resnet20\", \"resnet32\"]",
                    ));
            }
            let mut seen = BTreeSet::new();
            for v in values.get_ref() {
                if matches!(v.get_ref(), toml::Value::Array(_) | toml::Value::Table(_)) {
                    return Err(self
                        .err(
                            v.span(),
                            format!("matrix axis `{}` holds a non-scalar value", axis.get_ref()),
                        )
                        .with_help("matrix values are strings, numbers or booleans"));
                }
                if !seen.insert(value::display(&value::canonical(v.get_ref()))) {
                    return Err(self.err(
                        v.span(),
                        format!("matrix axis `{}` repeats a value", axis.get_ref()),
                    ));
                }
            }
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.get_ref().iter().map(move |v| {
                        let mut c = c.clone();
                        c.insert(axis.get_ref().clone(), value::canonical(v.get_ref()));
                        c
                    })
                })
                .collect();
        }
        Ok(combos)
    }

    fn instance(
        &self,
        name: &Spanned<String>,
        stage: &Spanned<RawStage>,
        matrix: &BTreeMap<String, Value>,
        globals: &BTreeMap<String, Value>,
    ) -> Result<Vec<StageSpec>, Diagnostic> {
        let raw = stage.get_ref();
        let instance_name = instance_name(name.get_ref(), matrix);
        // Own params may themselves use ${matrix.X} and ${params.X}.
        let mut own = BTreeMap::new();
        for (k, v) in &raw.params {
            let mut val = value::canonical(v.get_ref());
            if let (Value::String(s), toml::Value::String(_)) = (&val, v.get_ref()) {
                let sp = Spanned::new(v.span(), s.clone());
                val = Value::String(self.subst(&sp, globals, matrix, false)?);
            }
            own.insert(k.get_ref().clone(), val);
        }
        let mut scope_params = globals.clone();
        scope_params.extend(own.clone());

        let interp = |list: &[Spanned<String>]| -> Result<Vec<Spanned<String>>, Diagnostic> {
            list.iter()
                .map(|s| {
                    Ok(Spanned::new(
                        s.span(),
                        self.subst(s, &scope_params, matrix, false)?,
                    ))
                })
                .collect()
        };
        let deps = interp(&raw.deps)?;
        let outs = interp(&raw.outs)?;
        let needs = interp(&raw.needs)?;
        let mut env = BTreeMap::new();
        for (k, v) in &raw.env {
            env.insert(
                k.get_ref().clone(),
                self.subst(v, &scope_params, matrix, false)?,
            );
        }
        let mut used = BTreeSet::new();
        for s in raw
            .deps
            .iter()
            .chain(&raw.outs)
            .chain(&raw.needs)
            .chain(raw.env.values())
        {
            interp::used_params(s.get_ref(), &mut used);
        }
        let resources = raw
            .resources
            .as_ref()
            .map(|r| *r.get_ref())
            .unwrap_or_default();
        let timeout = raw.timeout.as_ref().map(|t| self.duration(t)).transpose()?;
        if let Some(ex) = &raw.executor
            && !["local", "slurm"].contains(&ex.get_ref().as_str())
        {
            return Err(self
                .err(ex.span(), format!("unknown executor `{}`", ex.get_ref()))
                .with_help("use \"local\" or \"slurm\""));
        }
        let base = StageSpec {
            name: instance_name.clone(),
            template: name.get_ref().clone(),
            action: Action::Cmd(String::new()),
            params: BTreeMap::new(),
            matrix: matrix.clone(),
            deps,
            outs,
            needs,
            cpus: resources.cpus.unwrap_or(1),
            gpus: resources.gpus.unwrap_or(0),
            env,
            timeout,
            retries: raw.retries,
            executor: raw.executor.as_ref().map(|e| e.get_ref().clone()),
            time: raw.time.as_ref().map(|t| t.get_ref().clone()),
            mem: raw.mem.as_ref().map(|t| t.get_ref().clone()),
            span: name.span(),
        };
        if resources.cpus == Some(0) {
            return Err(self
                .err(
                    raw.resources.as_ref().unwrap().span(),
                    "a stage needs at least one cpu",
                )
                .with_help("set cpus = 1 or more"));
        }

        match (&raw.cmd, &raw.kind) {
            (Some(cmd), None) => {
                let text = self.subst(cmd, &scope_params, matrix, true)?;
                interp::used_params(cmd.get_ref(), &mut used);
                let mut params = own;
                for u in used {
                    params.insert(u.clone(), scope_params[&u].clone());
                }
                Ok(vec![StageSpec {
                    action: Action::Cmd(text),
                    params,
                    ..base
                }])
            }
            (None, Some(kind)) => self.builtin(kind, base, raw, &own, globals, &scope_params, used),
            (Some(c), Some(_)) => Err(self
                .err(
                    c.span(),
                    format!("stage `{}` has both `cmd` and `kind`", name.get_ref()),
                )
                .with_help(
                    "a stage either runs a shell command (cmd) or a built-in kind (kind), not both",
                )),
            (None, None) => Err(self
                .err(
                    name.span(),
                    format!("stage `{}` has neither `cmd` nor `kind`", name.get_ref()),
                )
                .with_help(
                    "add cmd = \"...\" for a shell command, or kind = \"...\" for a built-in stage",
                )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn builtin(
        &self,
        kind: &Spanned<String>,
        base: StageSpec,
        raw: &RawStage,
        own: &BTreeMap<String, Value>,
        globals: &BTreeMap<String, Value>,
        scope_params: &BTreeMap<String, Value>,
        used: BTreeSet<String>,
    ) -> Result<Vec<StageSpec>, Diagnostic> {
        let Some(k) = self.registry.get(kind.get_ref()) else {
            let mut d = self.err(
                kind.span(),
                format!("unknown stage kind `{}`", kind.get_ref()),
            );
            d = match did_you_mean(kind.get_ref(), self.registry.names()) {
                Some(s) => d.with_help(format!(
                    "did you mean `{s}`? known kinds: {}",
                    self.registry.names().collect::<Vec<_>>().join(", ")
                )),
                None => d.with_help(format!(
                    "known kinds: {}",
                    self.registry.names().collect::<Vec<_>>().join(", ")
                )),
            };
            return Err(d);
        };
        let decls = k.params();
        let declared = || decls.iter().map(|d| d.name);
        for pk in raw.params.keys() {
            if !declared().any(|n| n == pk.get_ref()) {
                let mut d = self.err(
                    pk.span(),
                    format!(
                        "unknown parameter `{}` for kind `{}`",
                        pk.get_ref(),
                        k.name()
                    ),
                );
                d = match did_you_mean(pk.get_ref(), declared()) {
                    Some(s) => d.with_help(format!("did you mean `{s}`?")),
                    None => d.with_help(format!(
                        "`{}` accepts: {}",
                        k.name(),
                        declared().collect::<Vec<_>>().join(", ")
                    )),
                };
                return Err(d);
            }
        }
        let mut params = BTreeMap::new();
        for d in decls {
            let v = own
                .get(d.name)
                .or_else(|| base.matrix.get(d.name))
                .or_else(|| globals.get(d.name))
                .cloned()
                .or_else(|| default_value(d));
            match v {
                Some(v) => {
                    params.insert(d.name.to_string(), v);
                }
                None => {
                    return Err(self
                        .err(
                            base.span.clone(),
                            format!(
                                "stage `{}` (kind `{}`) needs parameter `{}`",
                                base.name,
                                k.name(),
                                d.name
                            ),
                        )
                        .with_help(format!(
                            "set it in [stages.{}.params] or in [params]: {}",
                            base.template, d.help
                        )));
                }
            }
        }
        for u in used {
            params
                .entry(u.clone())
                .or_insert_with(|| scope_params[&u].clone());
        }
        let input = ExpandInput {
            name: base.name.clone(),
            template: base.template.clone(),
            matrix: base.matrix.clone(),
            params,
            deps: base.deps.iter().map(|d| d.get_ref().clone()).collect(),
            outs: base.outs.iter().map(|d| d.get_ref().clone()).collect(),
        };
        let expanded = k
            .expand(&input)
            .map_err(|e| self.err(kind.span(), format!("stage `{}`: {e}", base.name)))?;
        let single = expanded.len() == 1;
        let respan = |list: Vec<String>| {
            list.into_iter()
                .map(|s| Spanned::new(kind.span(), s))
                .collect::<Vec<_>>()
        };
        let final_name = |e: &crate::registry::Expanded| {
            if e.suffix.is_empty() {
                return base.name.clone();
            }
            let mut m = base.matrix.clone();
            for axis in &e.shared_without {
                m.remove(*axis);
            }
            format!("{}/{}", instance_name(&base.template, &m), e.suffix)
        };
        let names: BTreeMap<String, String> = expanded
            .iter()
            .map(|e| (e.suffix.clone(), final_name(e)))
            .collect();
        // `{stage:SUFFIX}` -> that chain stage's name, as a path under .incrpipe/chain/.
        let place = |list: Vec<String>| -> Result<Vec<String>, Diagnostic> {
            list.into_iter()
                .map(|p| {
                    let mut out = p.clone();
                    while let Some(start) = out.find("{stage:") {
                        let end = out[start..].find('}').map(|e| start + e).ok_or_else(|| {
                            self.err(
                                kind.span(),
                                format!("kind `{}` wrote a bad placeholder in `{p}`", k.name()),
                            )
                        })?;
                        let suffix = &out[start + 7..end];
                        let name = names.get(suffix).ok_or_else(|| {
                            self.err(
                                kind.span(),
                                format!(
                                    "kind `{}` refers to unknown chain stage `{suffix}`",
                                    k.name()
                                ),
                            )
                        })?;
                        out = format!("{}{}{}", &out[..start], chain_dir(name), &out[end + 1..]);
                    }
                    Ok(out)
                })
                .collect()
        };
        expanded
            .into_iter()
            .map(|e| {
                let kind_impl = self.registry.get(e.kind).ok_or_else(|| {
                    self.err(
                        kind.span(),
                        format!(
                            "kind `{}` expands into unregistered kind `{}`",
                            k.name(),
                            e.kind
                        ),
                    )
                })?;
                let name = final_name(&e);
                let shared = !e.shared_without.is_empty();
                // Needs and deps as written stay with a single stage; chains are
                // linked through their deps.
                Ok(StageSpec {
                    name,
                    action: Action::Builtin {
                        kind: e.kind.to_string(),
                        version: kind_impl.version(),
                    },
                    params: e.params,
                    deps: if single {
                        base.deps.clone()
                    } else {
                        respan(place(e.deps)?)
                    },
                    outs: if single {
                        base.outs.clone()
                    } else {
                        respan(place(e.outs)?)
                    },
                    matrix: if shared {
                        BTreeMap::new()
                    } else {
                        base.matrix.clone()
                    },
                    ..base.clone()
                })
            })
            .collect()
    }

    fn subst(
        &self,
        s: &Spanned<String>,
        params: &BTreeMap<String, Value>,
        matrix: &BTreeMap<String, Value>,
        quote: bool,
    ) -> Result<String, Diagnostic> {
        // A command's `${a.b}` would pass here and fail in bash; say so now, where it is.
        if quote && let Some((range, inner)) = interp::bad_shell_expansion(s.get_ref()) {
            let last = inner.rsplit('.').next().unwrap_or_default();
            let help = if params.contains_key(last) {
                format!(
                    "did you mean `${{params.{last}}}`? pipeline params are `${{params.NAME}}`, matrix axes `${{matrix.NAME}}`"
                )
            } else {
                "pipeline params are `${params.NAME}` and matrix axes `${matrix.NAME}`; a shell variable's name has no `.`".to_string()
            };
            return Err(self
                .err(
                    self.inner_span(s, range),
                    format!("`${{{inner}}}` is neither a reference nor a shell expansion (bash would stop with \"bad substitution\")"),
                )
                .with_help(help));
        }
        substitute(s.get_ref(), &Scope2 { params, matrix }, quote).map_err(|r| {
            let known: Vec<&str> = match r.scope {
                Scope::Params => params.keys().map(String::as_str).collect(),
                Scope::Matrix => matrix.keys().map(String::as_str).collect(),
            };
            let mut d = self.err(
                self.inner_span(s, r.range.clone()),
                format!(
                    "undefined {} `{}`",
                    if r.scope == Scope::Params {
                        "parameter"
                    } else {
                        "matrix axis"
                    },
                    r.name
                ),
            );
            let list = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            d = match did_you_mean(&r.name, known.iter().copied()) {
                Some(m) => d.with_help(format!(
                    "did you mean `{m}`? defined {}: {list}",
                    r.scope.as_str()
                )),
                None => d.with_help(format!("defined {}: {list}", r.scope.as_str())),
            };
            d
        })
    }

    fn duration(&self, v: &Spanned<toml::Value>) -> Result<Duration, Diagnostic> {
        let bad = || {
            self.err(v.span(), "invalid timeout")
                .with_help("give seconds (3600) or a duration such as \"90s\", \"30m\", \"2h\"")
        };
        match v.get_ref() {
            toml::Value::Integer(i) if *i > 0 => Ok(Duration::from_secs(*i as u64)),
            toml::Value::Float(f) if *f > 0.0 && f.is_finite() => Ok(Duration::from_secs_f64(*f)),
            toml::Value::String(s) => {
                let s = s.trim();
                let (num, unit) = s.split_at(
                    s.find(|c: char| !c.is_ascii_digit() && c != '.')
                        .unwrap_or(s.len()),
                );
                let n: f64 = num.parse().map_err(|_| bad())?;
                let mult = match unit.trim() {
                    "" | "s" => 1.0,
                    "m" | "min" => 60.0,
                    "h" => 3600.0,
                    _ => return Err(bad()),
                };
                if n <= 0.0 {
                    Err(bad())
                } else {
                    Ok(Duration::from_secs_f64(n * mult))
                }
            }
            _ => Err(bad()),
        }
    }
}

/// Where a chain stage keeps its output in the workspace.
pub fn chain_dir(stage: &str) -> String {
    format!(
        ".incrpipe/chain/{}",
        crate::cache::sanitize(&stage.replace('/', "~"))
    )
}

/// `train@net=resnet20,seed=1`, or the plain name without a matrix.
pub fn instance_name(base: &str, matrix: &BTreeMap<String, Value>) -> String {
    if matrix.is_empty() {
        return base.to_string();
    }
    let axes: Vec<String> = matrix
        .iter()
        .map(|(k, v)| format!("{k}={}", value::display(v)))
        .collect();
    format!("{base}@{}", axes.join(","))
}
