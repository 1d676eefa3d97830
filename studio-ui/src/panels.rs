//! The bottom dock (log and widgets) and the toasts.

use leptos::prelude::*;
use vela_protocol::AlertLevel;

use crate::bench::BenchWidget;
use crate::media::{MicWidget, VideoWidget};
use crate::store::{use_store, LogKind, Selection};

#[component]
pub fn Toasts() -> impl IntoView {
    let store = use_store();
    view! {
        <div class="toasts">
            <For each=move || store.toasts.get() key=|t| t.id let:t>
                {
                    let id = t.id;
                    let class = match t.level {
                        AlertLevel::Info => "toast info",
                        AlertLevel::Warning => "toast warning",
                        AlertLevel::Error => "toast error",
                    };
                    let icon = match t.level {
                        AlertLevel::Info => "i",
                        AlertLevel::Warning => "!",
                        AlertLevel::Error => "×",
                    };
                    view! {
                        <div class=class role="alert" on:click=move |_| store.toasts.update(|ts| ts.retain(|x| x.id != id))>
                            <span class="toast-icon">{icon}</span>
                            <span class="toast-text">{t.text.clone()}</span>
                        </div>
                    }
                }
            </For>
        </div>
    }
}

#[component]
pub fn Dock() -> impl IntoView {
    view! {
        <section class="dock">
            <LogPanel/>
            <Widgets/>
        </section>
    }
}

#[component]
fn LogPanel() -> impl IntoView {
    let store = use_store();
    let show_outputs = RwSignal::new(true);
    let lines = move || {
        let outs = show_outputs.get();
        store.log.with(|l| l.iter().rev().filter(|x| outs || x.kind != LogKind::Output).take(200).cloned().collect::<Vec<_>>())
    };
    view! {
        <div class="pane log-pane">
            <div class="pane-head">
                <span class="pane-title">"Log"</span>
                <span class="pane-count">{move || store.log.with(|l| l.len())}</span>
                <div class="tb-fill"></div>
                <label class="check">
                    <input type="checkbox" prop:checked=move || show_outputs.get() on:change=move |ev| show_outputs.set(event_target_checked(&ev))/>
                    "outputs"
                </label>
                <button class="link-btn" on:click=move |_| store.log.update(|l| l.clear())>"Clear"</button>
            </div>
            <div class="log-list" id="log-list">
                <For each=lines key=|l| l.seq let:l>
                    {
                        let (class, tag) = match l.kind {
                            LogKind::Info => ("log-line info", "info"),
                            LogKind::Warning => ("log-line warning", "warn"),
                            LogKind::Error => ("log-line error", "error"),
                            LogKind::Output => ("log-line output", "out"),
                        };
                        let node = l.node.clone();
                        let node_click = node.clone();
                        view! {
                            <div class=class>
                                <span class="log-time">{l.time.clone()}</span>
                                <span class="log-tag">{tag}</span>
                                {node.map(|n| view! {
                                    <span class="log-node" on:click=move |_| {
                                        if let Some(n) = node_click.clone() { store.selection.set(Selection::Node(n)) }
                                    }>{n}</span>
                                })}
                                <span class="log-text">{l.text.clone()}</span>
                            </div>
                        }
                    }
                </For>
                <Show when=move || store.log.with(|l| l.is_empty())>
                    <div class="muted pad">"Alerts and node outputs appear here."</div>
                </Show>
            </div>
        </div>
    }
}

/// Per-node widgets: video and microphone for media nodes, a prompt box, command buttons,
/// and a text log of what each node published (Collector & co.).
#[component]
fn Widgets() -> impl IntoView {
    let store = use_store();
    let nodes = move || store.outputs.with(|o| o.keys().cloned().collect::<Vec<_>>());
    let prompts = move || {
        store.state.with(|s| {
            s.graph.nodes.iter().filter(|n| n.type_name == "UserPrompt").map(|n| n.name.clone()).collect::<Vec<_>>()
        })
    };
    let of_type = move |t: &'static str| {
        store.state.with(|s| s.graph.nodes.iter().filter(|n| n.type_name == t).map(|n| n.name.clone()).collect::<Vec<_>>())
    };
    let videos = move || of_type("VideoOutput");
    let mics = move || of_type("WebAudioIn");
    let sims = move || of_type("MimicGen");
    // Nodes whose type declares commands get a row of buttons (UserPrompt has its own box).
    let commanded = move || {
        store.state.with(|s| {
            s.graph
                .nodes
                .iter()
                .filter(|n| n.type_name != "UserPrompt")
                .filter_map(|n| {
                    let d = store.descriptor(&n.type_name)?;
                    (!d.commands.is_empty()).then(|| (n.name.clone(), d.commands))
                })
                .collect::<Vec<_>>()
        })
    };
    view! {
        <div class="pane widgets-pane">
            <div class="pane-head">
                <span class="pane-title">"Widgets"</span>
                <div class="tb-fill"></div>
                <button class="link-btn" on:click=move |_| store.outputs.update(|o| o.clear())>"Clear"</button>
            </div>
            <div class="widgets">
                <For each=sims key=|n| n.clone() let:node>
                    <BenchWidget node=node/>
                </For>
                <For each=videos key=|n| n.clone() let:node>
                    <VideoWidget node=node/>
                </For>
                <For each=mics key=|n| n.clone() let:node>
                    <MicWidget node=node/>
                </For>
                <For each=prompts key=|n| n.clone() let:node>
                    <PromptWidget node=node/>
                </For>
                <For each=commanded key=|c| c.0.clone() let:c>
                    <CommandWidget node=c.0 commands=c.1/>
                </For>
                <For each=nodes key=|n| n.clone() let:node>
                    <TextLogWidget node=node/>
                </For>
                <Show when=move || store.outputs.with(|o| o.is_empty()) && prompts().is_empty() && videos().is_empty() && mics().is_empty() && sims().is_empty()>
                    <div class="muted pad">"Node outputs (text logs of collectors and other sinks) show here while the graph runs."</div>
                </Show>
            </div>
        </div>
    }
}

#[component]
fn TextLogWidget(node: String) -> impl IntoView {
    let store = use_store();
    let n = node.clone();
    let lines = move || {
        store.outputs.with(|o| o.get(&n).map(|l| l.iter().rev().take(100).cloned().collect::<Vec<_>>()).unwrap_or_default())
    };
    let n = node.clone();
    let total = move || store.outputs.with(|o| o.get(&n).map(|l| l.len()).unwrap_or(0));
    let n = node.clone();
    let select = move |_| store.selection.set(Selection::Node(n.clone()));
    view! {
        <div class="widget" data-widget=node.clone()>
            <div class="widget-head" on:click=select>
                <span class="widget-kind">"text log"</span>
                <span class="mono">{node.clone()}</span>
                <span class="pane-count">{total}</span>
            </div>
            <div class="widget-body">
                <For each=lines key=|l| l.seq let:l>
                    <div class="wline"><span class="log-time">{l.time.clone()}</span>{l.text.clone()}</div>
                </For>
            </div>
        </div>
    }
}

/// Buttons for a node's commands (e.g. MimicGen: reset episode, reset stats, pause).
#[component]
fn CommandWidget(node: String, commands: Vec<vela_protocol::CommandSpec>) -> impl IntoView {
    use vela_protocol::ClientMsg;
    let store = use_store();
    let n = node.clone();
    let select = move |_| store.selection.set(Selection::Node(n.clone()));
    let buttons = commands
        .into_iter()
        .map(|c| {
            let n = node.clone();
            let name = c.name.clone();
            let click = move |_| {
                crate::conn::request(
                    store,
                    ClientMsg::Command { node: n.clone(), name: name.clone(), args: serde_json::json!({}) },
                    format!("{} on {n}", name),
                );
            };
            view! { <button class="btn" title=c.help.clone() data-command=c.name.clone() on:click=click>{c.title.clone()}</button> }
        })
        .collect::<Vec<_>>();
    view! {
        <div class="widget command-widget" data-widget=node.clone()>
            <div class="widget-head" on:click=select>
                <span class="widget-kind">"controls"</span>
                <span class="mono">{node.clone()}</span>
            </div>
            <div class="prompt-actions">{buttons}</div>
        </div>
    }
}

/// A text box for a UserPrompt node: what is submitted enters the graph as final text.
#[component]
fn PromptWidget(node: String) -> impl IntoView {
    use vela_protocol::ClientMsg;
    let store = use_store();
    let text = RwSignal::new(String::new());
    let n = node.clone();
    let submit = move || {
        let t = text.get_untracked();
        if t.trim().is_empty() {
            return;
        }
        let args = serde_json::json!({ "text": t });
        crate::conn::request(store, ClientMsg::Command { node: n.clone(), name: "submit".into(), args }, format!("send to {n}"));
        text.set(String::new());
    };
    let submit2 = submit.clone();
    let n = node.clone();
    let select = move |_| store.selection.set(Selection::Node(n.clone()));
    view! {
        <div class="widget prompt-widget" data-widget=node.clone()>
            <div class="widget-head" on:click=select>
                <span class="widget-kind prompt">"prompt"</span>
                <span class="mono">{node.clone()}</span>
            </div>
            <textarea
                class="prompt-text"
                placeholder="Type an instruction…  (Enter sends, Shift+Enter: new line)"
                prop:value=move || text.get()
                on:input=move |ev| text.set(event_target_value(&ev))
                on:keydown=move |ev: web_sys::KeyboardEvent| {
                    if ev.key() == "Enter" && !ev.shift_key() {
                        ev.prevent_default();
                        submit();
                    }
                }
            ></textarea>
            <div class="prompt-actions">
                <button class="btn primary" on:click=move |_| submit2()>"Send"</button>
            </div>
        </div>
    }
}
