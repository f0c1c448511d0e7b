//! `incrpipe dag`: the stage graph as text, or as Graphviz.

use std::path::Path;
use std::process::ExitCode;

use incrpipe::dag::Dag;
use incrpipe::spec::Action;

use super::Env;

pub fn run(env: &Env, file: &Path, dot: bool) -> Result<(), ExitCode> {
    let dag = env.load(file, false)?;
    print!("{}", if dot { render_dot(&dag) } else { render(&dag) });
    Ok(())
}

fn render(dag: &Dag) -> String {
    let mut t = String::new();
    for &i in &dag.order {
        let n = &dag.nodes[i];
        let what = match &n.spec.action {
            Action::Cmd(c) => format!("cmd: {}", c.lines().next().unwrap_or("")),
            Action::Builtin { kind, version } => format!("kind: {kind} v{version}"),
        };
        t.push_str(&format!("{}  [{what}]", n.spec.name));
        if n.spec.gpus > 0 {
            t.push_str(&format!(" gpus={}", n.spec.gpus));
        }
        t.push('\n');
        for u in &n.upstream {
            t.push_str(&format!("    <- {}\n", dag.nodes[*u].spec.name));
        }
    }
    t
}

fn render_dot(dag: &Dag) -> String {
    let mut t = String::from("digraph pipeline {\n  rankdir=LR;\n");
    for &i in &dag.order {
        t.push_str(&format!("  \"{}\";\n", dag.nodes[i].spec.name));
        for u in &dag.nodes[i].upstream {
            t.push_str(&format!(
                "  \"{}\" -> \"{}\";\n",
                dag.nodes[*u].spec.name, dag.nodes[i].spec.name
            ));
        }
    }
    t.push_str("}\n");
    t
}
