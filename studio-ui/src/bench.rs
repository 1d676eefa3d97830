//! The benchmark widget: start or stop a run of N episodes on a MimicGen node, watch the
//! success rate (with its Wilson 95% band) and the episode lengths come in, open the report.
//! The server runs the benchmark; every tab draws the same run from its progress messages.

use leptos::prelude::*;
use vela_protocol::{wilson, AlertLevel, BenchRun, ClientMsg};

use crate::store::{use_store, BenchView, Selection};

/// Chart geometry (SVG user units): the rate plot above, one bar per episode's steps below.
/// One user unit is one pixel at the widget's width, so labels keep their size.
const W: f64 = 382.0;
const LEFT: f64 = 34.0;
const RATE_TOP: f64 = 6.0;
const RATE_H: f64 = 46.0;
const STEPS_TOP: f64 = RATE_TOP + RATE_H + 7.0;
const STEPS_H: f64 = 18.0;
const H: f64 = STEPS_TOP + STEPS_H + 1.0;

#[component]
pub fn BenchWidget(node: String) -> impl IntoView {
    let store = use_store();
    let episodes = RwSignal::new("100".to_string());
    let seed = RwSignal::new("0".to_string());
    let n = node.clone();
    // The latest run, when it is this node's.
    let mine = Memo::new(move |_| store.bench.with(|b| b.as_ref().filter(|b| b.run.node == n).cloned()));
    let running = move || mine.with(|m| m.as_ref().is_some_and(|b| b.run.running));
    let other_running = {
        let n = node.clone();
        move || store.bench.with(|b| b.as_ref().is_some_and(|b| b.run.running && b.run.node != n))
    };
    let n = node.clone();
    let start = move || {
        let parsed = (episodes.get_untracked().trim().parse::<u64>(), seed.get_untracked().trim().parse::<u64>());
        let (Ok(count), Ok(first)) = parsed else {
            store.toast(AlertLevel::Error, "Benchmark: episodes and seed must be whole numbers (episodes at least 1)");
            return;
        };
        let msg = ClientMsg::BenchStart { node: n.clone(), episodes: count, seed: first, fast: true };
        crate::conn::request(store, msg, format!("benchmark {n}"));
    };
    let toggle = move |_| {
        if running() {
            crate::conn::request(store, ClientMsg::BenchStop, "stop the benchmark");
        } else {
            start();
        }
    };
    let n = node.clone();
    let select = move |_| store.selection.set(Selection::Node(n.clone()));
    let state = move || match mine.get() {
        Some(b) if b.run.running => "running",
        Some(b) if b.finished.as_ref().is_some_and(|f| f.complete) => "finished",
        Some(_) => "stopped",
        None => "idle",
    };
    // Where the run is, in the head: progress while it runs, then how it ended.
    let status = move || {
        mine.with(|m| match m {
            Some(b) => match &b.finished {
                Some(f) => f.reason.clone(),
                None => {
                    let (n, total) = (b.run.results.len() as u64, b.run.episodes);
                    // The time left at the pace so far.
                    let eta = if n > 0 { format!(" · ~{:.0} s left", b.run.elapsed_s / n as f64 * (total - n.min(total)) as f64) } else { String::new() };
                    format!("running {n}/{total}{eta}")
                }
            },
            None => String::new(),
        })
    };
    let report = move || mine.with(|m| m.as_ref().and_then(|b| b.finished.as_ref()?.report_url.clone()));
    view! {
        <div class="widget bench-widget" data-widget=node.clone() data-bench-state=state>
            <div class="widget-head" on:click=select>
                <span class="widget-kind bench">"benchmark"</span>
                <span class="mono">{node.clone()}</span>
                <span class=move || format!("bench-status {}", state())>{status}</span>
            </div>
            <div class="bench-body">
                <div class="bench-controls">
                    <label class="bench-field">"episodes"
                        <input class="field num" id=format!("bench-{node}-episodes") type="number" min="1" step="1"
                            prop:value=move || episodes.get() prop:disabled=running
                            on:input=move |ev| episodes.set(event_target_value(&ev))/>
                    </label>
                    <label class="bench-field">"seed"
                        <input class="field num" id=format!("bench-{node}-seed") type="number" min="0" step="1"
                            prop:value=move || seed.get() prop:disabled=running
                            on:input=move |ev| seed.set(event_target_value(&ev))/>
                    </label>
                    <button class="btn" class:primary=move || !running() class:danger=running data-bench="toggle"
                        prop:disabled=other_running
                        title="Runs the episodes on this simulator at full speed, seeds seed, seed+1, …; the graph is started if needed"
                        on:click=toggle>
                        {move || if running() { "■ Stop" } else { "▶ Start" }}
                    </button>
                    <div class="tb-fill"></div>
                    {move || report().map(|u| view! { <a class="bench-report" href=u target="_blank" rel="noopener">"Report ↗"</a> })}
                </div>
                {move || match mine.get() {
                    Some(b) => view! { <BenchResult b=b/> }.into_any(),
                    None => view! {
                        <div class="bench-empty muted">
                            "Run N episodes of this simulator with its current policy and get the success rate, "
                            "a live chart and an HTML report. Episode i uses seed + i, as in "<code>"vela bench"</code>"."
                        </div>
                    }
                    .into_any(),
                }}
            </div>
        </div>
    }
}

/// Counters and the chart.
#[component]
fn BenchResult(b: BenchView) -> impl IntoView {
    let run = &b.run;
    let n = run.results.len() as u64;
    let k = run.successes();
    let (lo, hi) = wilson(k, n, 1.96);
    let pct = |x: f64| format!("{:.0}%", 100.0 * x);
    let counters = if n == 0 {
        format!("starting… 0/{} episodes", run.episodes)
    } else {
        format!(
            "{k}/{n} successes ({}) · 95% {}–{} · {:.0} s",
            pct(k as f64 / n as f64),
            pct(lo),
            pct(hi),
            run.elapsed_s
        )
    };
    view! {
        <div class="bench-counters num">{counters}</div>
        {chart(run)}
    }
}

/// Running success rate with its Wilson 95% band over episodes 1..N (the x axis spans the
/// whole run, so the line's length shows progress), and each episode's steps as a bar:
/// green a success, red a failure, full height the step limit.
fn chart(run: &BenchRun) -> impl IntoView {
    let total = run.episodes.max(1) as f64;
    // Episode i (from 0) sits in the middle of its slot; the axis spans the whole run.
    let x = |i: f64| LEFT + (W - LEFT - 2.0) * (i + 0.5) / total;
    let y = |p: f64| RATE_TOP + RATE_H * (1.0 - p);
    let (mut line, mut upper, mut lower) = (Vec::new(), Vec::new(), Vec::new());
    let mut k = 0;
    for (i, e) in run.results.iter().enumerate() {
        k += e.success as u64;
        let n = i as u64 + 1;
        let (lo, hi) = wilson(k, n, 1.96);
        let xi = x(i as f64);
        line.push(format!("{xi:.1},{:.1}", y(k as f64 / n as f64)));
        upper.push(format!("{xi:.1},{:.1}", y(hi)));
        lower.push(format!("{xi:.1},{:.1}", y(lo)));
    }
    lower.reverse();
    let band = [upper, lower].concat().join(" ");
    let limit = run.max_steps.max(1) as f64;
    let bar_w = ((W - LEFT - 2.0) / total * 0.8).clamp(0.6, 12.0);
    let bars = run
        .results
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let h = STEPS_H * (e.steps as f64 / limit).min(1.0);
            let class = if e.success { "bench-bar ok" } else { "bench-bar bad" };
            view! {
                <rect class=class x=x(i as f64) - bar_w / 2.0 y=STEPS_TOP + STEPS_H - h width=bar_w height=h.max(0.5)>
                    <title>{format!("seed {}: {} in {} steps", e.seed, if e.success { "success" } else { "failure" }, e.steps)}</title>
                </rect>
            }
        })
        .collect_view();
    view! {
        <svg class="bench-chart" viewBox=format!("0 0 {W} {H}")>
            <line class="bench-grid" x1=LEFT x2=W y1=y(1.0) y2=y(1.0)></line>
            <line class="bench-grid" x1=LEFT x2=W y1=y(0.5) y2=y(0.5)></line>
            <line class="bench-grid" x1=LEFT x2=W y1=y(0.0) y2=y(0.0)></line>
            <text class="bench-axis" x=LEFT - 4.0 y=y(1.0) + 4.0 text-anchor="end">"100%"</text>
            <text class="bench-axis" x=LEFT - 4.0 y=y(0.5) + 4.0 text-anchor="end">"50%"</text>
            <text class="bench-axis" x=LEFT - 4.0 y=y(0.0) + 4.0 text-anchor="end">"0%"</text>
            <text class="bench-axis" x=LEFT - 4.0 y=STEPS_TOP + STEPS_H text-anchor="end">"steps"</text>
            <polygon class="bench-band" points=band></polygon>
            <polyline class="bench-rate" points=line.join(" ")></polyline>
            <line class="bench-grid" x1=LEFT x2=W y1=STEPS_TOP + STEPS_H y2=STEPS_TOP + STEPS_H></line>
            {bars}
        </svg>
    }
}
