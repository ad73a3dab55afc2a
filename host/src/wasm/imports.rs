//! The host side of the WIT interfaces a context imports: `state`, `events`, `calls`,
//! `logging` and `clock`. State and events go through [`OwnState`](super::own_state), so a
//! context only ever touches its own keys; every write and event goes into the call's unit.

use super::bindings::carshare::context::{calls, clock, events, logging, state, types};
use super::convert;
use super::instance::{InstanceState, Scope};

impl types::Host for InstanceState {}

impl state::Host for InstanceState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.own()?.get(&key)
    }

    fn peek(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.own()?.peek(&key)
    }

    fn peek_at(&mut self, id: u64, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        self.own()?.peek_at(id, &key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.own()?.set(&key, value)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.own()?.delete(&key)
    }

    fn scan(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        self.own()?.scan(&prefix, after.as_deref(), limit)
    }

    fn index_put(&mut self, index: String, term: Vec<u8>, id: u64) -> wasmtime::Result<()> {
        self.own()?.index_put(&index, &term, id)
    }

    fn index_delete(&mut self, index: String, term: Vec<u8>, id: u64) -> wasmtime::Result<()> {
        self.own()?.index_delete(&index, &term, id)
    }

    fn index_count(&mut self, index: String, term: Option<Vec<u8>>) -> wasmtime::Result<u64> {
        self.own()?.index_count(&index, term.as_deref())
    }

    fn index_page(
        &mut self,
        index: String,
        term: Option<Vec<u8>>,
        offset: u64,
        limit: u32,
        descending: bool,
    ) -> wasmtime::Result<Vec<u64>> {
        self.own()?
            .index_page(&index, term.as_deref(), offset, limit, descending)
    }

    fn next_id(&mut self, sequence: String) -> wasmtime::Result<u64> {
        self.own()?.next_id(&sequence)
    }
}

impl events::Host for InstanceState {
    fn publish(&mut self, event_type: String, key: Option<String>, payload: String) -> wasmtime::Result<()> {
        self.own()?.publish(&event_type, key, payload)
    }

    fn handling(&mut self, seq: u64) -> wasmtime::Result<()> {
        let Some(Scope {
            unit,
            batch: Some(batch),
            ..
        }) = self.scope.as_mut()
        else {
            wasmtime::bail!("events.handling was called outside of handle-events");
        };
        let next = batch.marks.len();
        let Some(event) = batch.events.get(next).filter(|e| e.seq == seq) else {
            wasmtime::bail!(
                "events.handling({seq}) out of order: the next event of the call is {}",
                batch
                    .events
                    .get(next)
                    .map_or("none (all were started)".to_string(), |e| format!("#{}", e.seq))
            );
        };
        batch.marks.push(unit.savepoint());
        unit.caused_by(event);
        Ok(())
    }
}

impl calls::Host for InstanceState {
    async fn call(
        &mut self,
        context: String,
        mut request: types::RequestResult,
    ) -> wasmtime::Result<Result<types::Response, types::ContextError>> {
        request.caller = Some(self.context.to_string());
        let Scope {
            unit,
            calls,
            depth,
            batch,
        } = self
            .scope
            .take()
            .ok_or_else(|| wasmtime::format_err!("call outside of a call"))?;
        let savepoint = unit.savepoint();
        let started = std::time::Instant::now();
        let (mut unit, result) = calls
            .clone()
            .call(&context, convert::request_from_wit(request), unit, depth + 1)
            .await;
        self.nested += started.elapsed();
        if result.is_err() {
            unit.rollback_to(savepoint);
        }
        self.scope = Some(Scope {
            unit,
            calls,
            depth,
            batch,
        });
        Ok(result
            .map(convert::response_to_wit)
            .map_err(convert::call_error_to_wit))
    }
}

impl logging::Host for InstanceState {
    /// A guest's log line joins the host's log, with its context, version and the request
    /// (or event chain) it was serving.
    fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
        let message: String = message.chars().take(4096).collect();
        let context = &*self.context;
        let version = &*self.version;
        let request_id = self
            .scope
            .as_ref()
            .and_then(|s| s.unit.correlation_id())
            .unwrap_or("-");
        match level {
            logging::Level::Debug => tracing::debug!(context, version, request_id, "{message}"),
            logging::Level::Info => tracing::info!(context, version, request_id, "{message}"),
            logging::Level::Warn => tracing::warn!(context, version, request_id, "{message}"),
            logging::Level::Error => tracing::error!(context, version, request_id, "{message}"),
        }
        Ok(())
    }
}

impl clock::Host for InstanceState {
    fn now_millis(&mut self) -> wasmtime::Result<u64> {
        Ok(carshare_core::now_millis())
    }

    fn now_rfc3339(&mut self) -> wasmtime::Result<String> {
        Ok(carshare_core::rfc3339_utc(carshare_core::now_millis()))
    }
}
