//! The node palette: every registered type by category, unavailable ones greyed with why.

use std::collections::BTreeMap;

use leptos::prelude::*;
use vela_protocol::{Availability, NodeTypeInfo};

use crate::store::{category_hue, use_store, Drag};

#[component]
pub fn Palette() -> impl IntoView {
    let store = use_store();
    let filter = RwSignal::new(String::new());
    let groups = move || {
        let f = filter.get().to_lowercase();
        let mut by_cat: BTreeMap<String, Vec<NodeTypeInfo>> = BTreeMap::new();
        store.types.with(|types| {
            for t in types {
                let d = &t.descriptor;
                let hit = f.is_empty()
                    || d.type_name.to_lowercase().contains(&f)
                    || d.title.to_lowercase().contains(&f)
                    || d.category.to_lowercase().contains(&f)
                    || d.description.to_lowercase().contains(&f);
                if hit {
                    by_cat.entry(d.category.clone()).or_default().push(t.clone());
                }
            }
        });
        by_cat
            .into_iter()
            .map(|(cat, mut items)| {
                items.sort_by(|a, b| a.descriptor.title.cmp(&b.descriptor.title));
                let hue = category_hue(&cat);
                let count = items.len();
                view! {
                    <div class="pal-group">
                        <div class="pal-cat">
                            <span class="cat-swatch" style=format!("background: hsl({hue} 55% 55%)")></span>
                            {cat}
                            <span class="pal-count">{count}</span>
                        </div>
                        {items.into_iter().map(|t| view! { <PaletteItem info=t/> }).collect::<Vec<_>>()}
                    </div>
                }
            })
            .collect::<Vec<_>>()
    };
    view! {
        <aside class="palette">
            <div class="side-title">"Nodes"</div>
            <input
                class="pal-search"
                type="search"
                placeholder="Filter…"
                prop:value=move || filter.get()
                on:input=move |ev| filter.set(event_target_value(&ev))
            />
            <div class="pal-list">{groups}</div>
            <div class="pal-hint">"Drag onto the canvas, or click to add."</div>
        </aside>
    }
}

#[component]
fn PaletteItem(info: NodeTypeInfo) -> impl IntoView {
    let store = use_store();
    let d = info.descriptor;
    let (available, tip) = match &info.availability {
        Availability::Available => (true, if d.description.is_empty() { d.type_name.clone() } else { d.description.clone() }),
        Availability::Unavailable { reason } => (false, format!("Unavailable: {reason}")),
    };
    let reason = match &info.availability {
        Availability::Unavailable { reason } => Some(reason.clone()),
        _ => None,
    };
    let type_name = d.type_name.clone();
    let on_down = move |ev: web_sys::PointerEvent| {
        if !available || ev.button() != 0 {
            return;
        }
        ev.prevent_default();
        store.drag.set(Some(Drag::Palette {
            type_name: type_name.clone(),
            cx: ev.client_x() as f64,
            cy: ev.client_y() as f64,
            moved: false,
        }));
    };
    let ports = d
        .inputs
        .iter()
        .map(|p| p.types.first().map(|t| t.as_str()).unwrap_or("any"))
        .map(|t| view! { <span class=format!("mini-dot in t-{t}")></span> })
        .chain(d.outputs.iter().map(|p| {
            let t = p.types.first().map(|t| t.as_str()).unwrap_or("any");
            view! { <span class=format!("mini-dot out t-{t}")></span> }
        }))
        .collect::<Vec<_>>();
    view! {
        <div
            class="pal-item"
            class:unavailable=!available
            title=tip
            data-type=d.type_name.clone()
            on:pointerdown=on_down
        >
            <div class="pal-item-main">
                <span class="pal-title">{d.title.clone()}</span>
                <span class="pal-ports">{ports}</span>
            </div>
            <div class="pal-sub">
                {d.type_name.clone()}
                {reason.map(|r| view! { <span class="pal-reason">{r}</span> })}
            </div>
        </div>
    }
}
