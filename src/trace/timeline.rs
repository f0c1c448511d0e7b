//! `incrpipe trace --html FILE`: a run's timeline as one self-contained page. One lane per
//! CPU slot of `-j` (a stage holding c CPUs covers c lanes), one per GPU, one per
//! concurrent Slurm job; a bar per try that ran, its details on hover. The lanes are
//! assigned here; the page's script draws them (and says how many it drew, which the
//! browser test reads).

use serde::Serialize;

use super::{Outcome, RunTrace};

#[derive(Serialize)]
struct Bar {
    stage: String,
    /// First lane and how many it covers.
    lane: usize,
    span: usize,
    /// Seconds from the run's start.
    start: f64,
    end: f64,
    outcome: &'static str,
    details: String,
}

#[derive(Serialize)]
struct Page {
    title: String,
    lanes: Vec<String>,
    bars: Vec<Bar>,
    /// GPU lanes' bars (one per GPU a try held), drawn behind no stage bar.
    gpu_bars: Vec<Bar>,
    seconds: f64,
}

/// Lanes of one kind, each free from a time on: `take` the first `n` adjacent lanes free
/// at `start` (new lanes if there are not enough).
struct Lanes {
    free_at: Vec<f64>,
}

impl Lanes {
    fn take(&mut self, n: usize, start: f64, end: f64) -> usize {
        let n = n.max(1);
        let fits = |l: &Lanes, first: usize| {
            (first..first + n).all(|j| l.free_at.get(j).is_none_or(|&t| t <= start + 1e-9))
        };
        let first = (0..=self.free_at.len())
            .find(|&f| fits(self, f))
            .expect("past the last lane every lane is free");
        if self.free_at.len() < first + n {
            self.free_at.resize(first + n, f64::NEG_INFINITY);
        }
        for t in &mut self.free_at[first..first + n] {
            *t = end;
        }
        first
    }
}

fn page(run: &RunTrace) -> Page {
    let mut rows: Vec<&super::StageTrace> = run
        .stages
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Ran | Outcome::Failed) && s.start.is_some())
        .collect();
    rows.sort_by(|a, b| a.start.partial_cmp(&b.start).expect("finite times"));
    let mut cpu = Lanes {
        free_at: vec![f64::NEG_INFINITY; run.jobs.max(1) as usize],
    };
    let mut slurm = Lanes {
        free_at: Vec::new(),
    };
    let mut placed = Vec::new();
    for s in rows {
        let (start, end) = (s.start.unwrap_or(run.start), s.end.unwrap_or(run.end));
        let on_slurm = s.executor.as_deref() == Some("slurm");
        let span = if on_slurm { 1 } else { s.cpus.max(1) as usize };
        let lane = if on_slurm {
            slurm.take(1, start, end)
        } else {
            cpu.take(span, start, end)
        };
        placed.push((s, on_slurm, lane, span, start, end));
    }
    // Lanes: CPU slots, the run's GPUs and any other GPU a stage names (a Slurm node's),
    // then one per concurrent Slurm job.
    let mut gpus = run.gpus.clone();
    for (s, ..) in &placed {
        for g in &s.gpus {
            if !gpus.contains(g) {
                gpus.push(g.clone());
            }
        }
    }
    let gpu_base = cpu.free_at.len();
    let slurm_base = gpu_base + gpus.len();
    let mut lanes: Vec<String> = (1..=gpu_base).map(|i| format!("CPU slot {i}")).collect();
    lanes.extend(gpus.iter().map(|g| format!("GPU {g}")));
    lanes.extend((1..=slurm.free_at.len()).map(|i| format!("Slurm job {i}")));
    let mut bars = Vec::new();
    let mut gpu_bars = Vec::new();
    for (s, on_slurm, lane, span, start, end) in placed {
        let mut details = format!(
            "{} (try {}, {}): {:.2} s wall",
            s.stage,
            s.attempt,
            s.outcome.as_str(),
            end - start
        );
        if let Some(c) = s.cpu_s {
            details.push_str(&format!(", {c:.2} s CPU"));
        }
        if let Some(k) = s.peak_rss_kb {
            details.push_str(&format!(", peak RSS {:.1} MB", k as f64 / 1024.0));
        }
        if let Some(w) = &s.usage_unavailable {
            details.push_str(&format!(", CPU/RSS unavailable: {w}"));
        }
        if let Some(e) = &s.exit {
            details.push_str(&format!(", {e}"));
        }
        details.push_str(&format!(
            ", {} with {} CPU{}",
            s.executor.as_deref().unwrap_or("?"),
            s.cpus,
            if s.cpus == 1 { "" } else { "s" }
        ));
        if !s.gpus.is_empty() {
            details.push_str(&format!(", GPUs {}", s.gpus.join(",")));
        }
        if let Some(j) = &s.slurm_job {
            details.push_str(&format!(", Slurm job {j}"));
        }
        let bar = |lane, span| Bar {
            stage: s.stage.clone(),
            lane,
            span,
            start: start - run.start,
            end: end - run.start,
            outcome: s.outcome.as_str(),
            details: details.clone(),
        };
        bars.push(if on_slurm {
            bar(slurm_base + lane, 1)
        } else {
            bar(lane, span)
        });
        for g in &s.gpus {
            let at = gpus
                .iter()
                .position(|x| x == g)
                .expect("every GPU has a lane");
            gpu_bars.push(bar(gpu_base + at, 1));
        }
    }
    Page {
        title: format!("incrpipe run {} of {}", run.id, run.pipeline),
        lanes,
        bars,
        gpu_bars,
        seconds: (run.end - run.start).max(1e-3),
    }
}

/// The page: the data as JSON and a script that draws an SVG from it.
pub fn html(run: &RunTrace) -> String {
    let p = page(run);
    // `</` cannot end the script early: JSON escapes it.
    let data = serde_json::to_string(&p)
        .expect("a page serialises")
        .replace("</", "<\\/");
    let title = p
        .title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 13px sans-serif; margin: 1em; }}
.bar {{ stroke: #333; stroke-width: 0.5; }}
.bar.ran {{ fill: #4c8bd6; }} .bar.failed {{ fill: #d65c4c; }}
.gpu-bar {{ fill: #7fbf6a; stroke: #333; stroke-width: 0.5; }}
.lane {{ fill: #f3f3f3; }} text {{ font-size: 11px; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p id="summary"></p>
<div id="timeline"></div>
<script type="application/json" id="data">{data}</script>
<script>
(function () {{
  const d = JSON.parse(document.getElementById("data").textContent);
  const ns = "http://www.w3.org/2000/svg";
  const left = 140, width = 900, laneH = 22, top = 10;
  const h = top + d.lanes.length * laneH + 30;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", left + width + 20);
  svg.setAttribute("height", h);
  const x = (t) => left + (t / d.seconds) * width;
  const el = (name, attrs, text) => {{
    const e = document.createElementNS(ns, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  }};
  d.lanes.forEach((name, i) => {{
    el("rect", {{ class: "lane", x: left, y: top + i * laneH, width: width, height: laneH - 2 }});
    el("text", {{ x: 4, y: top + i * laneH + 15 }}, name);
  }});
  const draw = (b, cls) => {{
    const r = el("rect", {{
      class: cls, "data-stage": b.stage,
      x: x(b.start), y: top + b.lane * laneH + 1,
      width: Math.max(1, x(b.end) - x(b.start)), height: b.span * laneH - 4,
    }});
    const t = document.createElementNS(ns, "title");
    t.textContent = b.details;
    r.appendChild(t);
    const w = x(b.end) - x(b.start);
    if (cls !== "gpu-bar" && w > 7 * b.stage.length) {{
      el("text", {{ x: x(b.start) + 3, y: top + b.lane * laneH + 15, fill: "#fff" }}, b.stage);
    }}
  }};
  d.bars.forEach((b) => draw(b, "bar " + b.outcome));
  d.gpu_bars.forEach((b) => draw(b, "gpu-bar"));
  el("text", {{ x: left, y: h - 8 }}, "0 s");
  el("text", {{ x: left + width - 40, y: h - 8 }}, d.seconds.toFixed(1) + " s");
  document.getElementById("timeline").appendChild(svg);
  const n = svg.querySelectorAll(".bar").length;
  document.body.dataset.bars = String(n);
  document.getElementById("summary").textContent =
    n + " bars on " + d.lanes.length + " lanes over " + d.seconds.toFixed(2) + " s; hover a bar for its details.";
}})();
</script>
</body>
</html>
"##
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Outcome, RunTrace, StageTrace};
    use super::*;

    fn try_(stage: &str, start: f64, end: f64, cpus: u32, gpus: &[&str]) -> StageTrace {
        StageTrace {
            stage: stage.into(),
            key: Some("k".into()),
            outcome: Outcome::Ran,
            attempt: 1,
            start: Some(start),
            end: Some(end),
            wall_s: Some(end - start),
            cpu_s: None,
            peak_rss_kb: None,
            usage_unavailable: None,
            exit: Some("exit 0".into()),
            executor: Some("local".into()),
            cpus,
            gpus: gpus.iter().map(|g| g.to_string()).collect(),
            slurm_job: None,
        }
    }

    /// Overlapping stages take different slots, a 2-CPU stage two adjacent ones, a stage
    /// that starts as another ends takes its slot; GPUs get their own lanes.
    #[test]
    fn lanes_follow_the_slots_stages_held() {
        let run = RunTrace {
            id: "1".into(),
            pipeline: "p.toml".into(),
            start: 100.0,
            end: 110.0,
            jobs: 3,
            gpus: vec!["0".into()],
            stages: vec![
                try_("a", 100.0, 104.0, 1, &[]),
                try_("b", 100.5, 103.0, 2, &["0"]),
                try_("c", 104.0, 106.0, 1, &[]),
                try_("d", 104.5, 109.0, 2, &[]),
            ],
        };
        let p = page(&run);
        let lane = |s: &str| {
            let b = p.bars.iter().find(|b| b.stage == s).unwrap();
            (b.lane, b.span)
        };
        assert_eq!(lane("a"), (0, 1));
        assert_eq!(lane("b"), (1, 2));
        assert_eq!(lane("c"), (0, 1));
        // Two adjacent slots free while c holds the first.
        assert_eq!(lane("d"), (1, 2));
        assert_eq!(p.lanes[..3], ["CPU slot 1", "CPU slot 2", "CPU slot 3"]);
        assert_eq!(p.lanes.len(), 4);
        assert_eq!(p.gpu_bars.len(), 1);
        assert_eq!(p.lanes[p.gpu_bars[0].lane], "GPU 0");
        assert!(html(&run).contains("\"stage\":\"b\""));
    }
}
