//! A naive wasmtime host of the same component: wasmtime's default config
//! (no pooling allocator, no fuel, no epoch deadline), and per call a new
//! `Linker`, a default WASI context and `Linker::instantiate` — no
//! pre-instantiation. The component is compiled once, as any host would.

use tidings_host::bindings::{self, Rule, convert::Conv};
use tidings_sdk::types::{Context, OrderEvent};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::Outcome;

pub struct NaiveHost {
    engine: Engine,
    component: Component,
}

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::Host for State {
    fn log(&mut self, _level: bindings::LogLevel, _message: String) {}
}

impl bindings::types::Host for State {}

impl NaiveHost {
    pub fn new(component: &[u8]) -> Self {
        let engine = Engine::default();
        let component = Component::new(&engine, component).expect("the component compiles");
        Self { engine, component }
    }

    pub fn decide(&self, event: &OrderEvent, ctx: &Context) -> Outcome {
        let mut linker = Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI links");
        Rule::add_to_linker::<_, HasSelf<State>>(&mut linker, |s| s).expect("the contract links");
        let mut store = Store::new(
            &self.engine,
            State {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        let instance = linker
            .instantiate(&mut store, &self.component)
            .expect("the component instantiates");
        let rule = Rule::new(&mut store, &instance).expect("the component is a rule");
        let event: bindings::types::OrderEvent = event.without_contact_details().conv();
        let ctx: bindings::types::Context = ctx.clone().conv();
        rule.tidings_notify_plugin()
            .call_decide(&mut store, &event, &ctx)
            .expect("the call does not trap")
            .map(Conv::conv)
            .map_err(Conv::conv)
    }
}
