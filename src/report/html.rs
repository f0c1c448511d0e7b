//! `index.html`: the table, the claims and every figure on one page, with
//! relative image paths so that the results directory can be moved or served
//! as it is. A small script marks the page with how many figures loaded
//! (`data-images-loaded="N/M"` on body, and a visible line), which both warns
//! a reader of a broken page and lets a headless browser test check it.

use std::fmt::Write;

use super::ReportOptions;
use super::aggregate::{Row, find, networks};
use super::cells::{accuracy_cell, mean_sd, network_label, provenance, verdict_counts};
use super::claims::claims_for;
use super::figures::FIGURES;
use super::paper::{METHODS, method_title};
use super::phases;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1400px;margin:1em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:left}\
th{background:#eee}img{max-width:100%;border:1px solid #ddd}figure{margin:1.5em 0}\
.holds{color:#05620f}.contradicted{color:#a00}.muted{color:#666}";

const SCRIPT: &str = "window.addEventListener('load', function () {\n\
  var imgs = Array.prototype.slice.call(document.images);\n\
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;\n\
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);\n\
  document.getElementById('image-status').textContent = ok === imgs.length\n\
    ? 'All ' + imgs.length + ' figures loaded.'\n\
    : (imgs.length - ok) + ' of ' + imgs.length + ' figures failed to load.';\n\
});";

pub fn render(rows: &[Row], o: &ReportOptions) -> String {
    let mut s = String::new();
    let t = escape(&o.title);
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>"
    );
    let _ = writeln!(
        s,
        "<p>Test accuracy on CIFAR-10 in percent: mean ± sample standard deviation over seeds, then \
         the paper's Table 2 value (Istrate et al. 2017); the difference to it (Δ, percentage points) only \
         for the paper's own networks. In brackets: the test accuracy of the last phase's best-validation epoch.</p>"
    );
    let _ = writeln!(s, "<table id=\"table2\">\n<tr><th>Network</th>");
    for m in METHODS {
        let _ = write!(s, "<th>{}</th>", method_title(m));
    }
    let _ = writeln!(s, "</tr>");
    for (net, paper_net) in networks(rows) {
        let _ = write!(
            s,
            "<tr><td>{}</td>",
            escape(&network_label(&net, &paper_net))
        );
        for m in METHODS {
            let r = find(rows, &net, m);
            let _ = write!(
                s,
                "<td>{} <span class=\"muted\">[{}]</span></td>",
                escape(&accuracy_cell(r)),
                escape(&mean_sd(r.and_then(|r| r.accuracy_best_val.as_ref())))
            );
        }
        let _ = writeln!(s, "</tr>");
    }
    let _ = writeln!(
        s,
        "</table>\n<h2>Cost</h2>\n<table>\n<tr><th>Network</th><th>Method</th><th>Seeds</th><th>Epochs</th><th>Training FLOPs</th><th>Parameters</th><th>FLOPs per inference</th></tr>"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1} ± {:.1}</td><td>{:.3e}</td><td>{}</td><td>{:.3e}</td></tr>",
            escape(&r.net),
            method_title(&r.method),
            r.seeds.len(),
            r.epochs.mean,
            r.epochs.std,
            r.train_flops.mean,
            r.params.round(),
            r.flops_per_inference
        );
    }
    let _ = writeln!(
        s,
        "</table>\n<h2>Phases</h2>\n<table id=\"phases\">\n<tr><th>Network</th><th>Method</th><th>Epochs per phase and why each ended</th></tr>"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.net),
            method_title(&r.method),
            escape(&phases::summary(r))
        );
    }
    let [h, c, n, u] = verdict_counts(rows, o);
    let _ = writeln!(
        s,
        "</table>\n<h2>Claims at this scale</h2>\n<p>Judged on per-seed paired differences with Student-t \
         intervals; each claim names its test, and table2.md gives the full rule. In all: {h} hold, \
         {c} contradicted, {n} not resolved, {u} cannot be resolved with these seeds.</p>"
    );
    for (net, paper_net) in networks(rows) {
        let _ = writeln!(
            s,
            "<h3>{}</h3>\n<ul>",
            escape(&network_label(&net, &paper_net))
        );
        for c in claims_for(rows, &net, &o.claims) {
            let _ = writeln!(
                s,
                "<li>({}) {}: <strong class=\"{}\">{}</strong>. {}. <span class=\"muted\">Test: {}.</span></li>",
                c.id,
                escape(c.statement),
                c.verdict.class(),
                c.verdict.label(),
                escape(&c.detail),
                escape(&c.test)
            );
        }
        let _ = writeln!(s, "</ul>");
    }
    let _ = writeln!(
        s,
        "<h2>Figures</h2>\n<p id=\"image-status\">Checking figures…</p>"
    );
    for (stem, caption) in FIGURES {
        let _ = writeln!(
            s,
            "<figure><img src=\"{stem}.png\" alt=\"{c}\"><figcaption>{c} (<a href=\"{stem}.svg\">SVG</a>)</figcaption></figure>",
            c = escape(caption)
        );
    }
    let _ = writeln!(s, "<h2>Provenance</h2>\n<ul>");
    for (name, value) in provenance(rows) {
        let _ = writeln!(s, "<li>{name}: {}</li>", escape(&value));
    }
    let _ = writeln!(
        s,
        "</ul>\n<p>Data: <a href=\"table2.csv\">table2.csv</a>, <a href=\"table2.md\">table2.md</a>, <a href=\"runs.csv\">runs.csv</a>.</p>\n<script>\n{SCRIPT}\n</script>\n</body>\n</html>"
    );
    s
}
