//! The host side of the WIT interfaces a context imports: `state`, `events`, `calls`,
//! `logging` and `clock`. Every state access is namespaced by the instance's context, so a
//! context can never see another's keys; every write and event goes into the call's unit.

use super::bindings::carshare::context::{calls, clock, events, logging, state, types};
use super::instance::InstanceState;
use super::plugin;

/// Keys and values are bounded so one bad guest cannot bloat the database.
const MAX_KEY_LEN: usize = 1024;
const MAX_VALUE_LEN: usize = 1 << 20;

fn check_key(key: &str) -> wasmtime::Result<()> {
    if key.len() > MAX_KEY_LEN {
        wasmtime::bail!("state key longer than {MAX_KEY_LEN} bytes");
    }
    Ok(())
}

impl types::Host for InstanceState {}

impl state::Host for InstanceState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        check_key(&key)?;
        let ctx = self.context.clone();
        Ok(self.scope()?.unit.get(&ctx, &key)?)
    }

    fn peek(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        check_key(&key)?;
        let ctx = self.context.clone();
        Ok(self.scope()?.unit.peek(&ctx, &key)?)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        check_key(&key)?;
        if value.len() > MAX_VALUE_LEN {
            wasmtime::bail!("state value longer than {MAX_VALUE_LEN} bytes");
        }
        let ctx = self.context.clone();
        self.scope()?.unit.set(&ctx, &key, value);
        Ok(())
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        check_key(&key)?;
        let ctx = self.context.clone();
        self.scope()?.unit.delete(&ctx, &key);
        Ok(())
    }

    fn scan(&mut self, prefix: String) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        check_key(&prefix)?;
        let ctx = self.context.clone();
        Ok(self.scope()?.unit.scan(&ctx, &prefix)?)
    }

    fn next_id(&mut self, sequence: String) -> wasmtime::Result<u64> {
        check_key(&sequence)?;
        let ctx = self.context.clone();
        Ok(self.scope()?.unit.next_id(&ctx, &sequence)?)
    }
}

impl events::Host for InstanceState {
    fn publish(&mut self, event_type: String, key: Option<String>, payload: String) -> wasmtime::Result<()> {
        if event_type.is_empty() || event_type.len() > 128 {
            wasmtime::bail!("event type must be 1 to 128 bytes");
        }
        if payload.len() > MAX_VALUE_LEN {
            wasmtime::bail!("event payload longer than {MAX_VALUE_LEN} bytes");
        }
        let payload: serde_json::Value = serde_json::from_str(&payload)?;
        if !payload.is_object() {
            wasmtime::bail!("the payload of {event_type} is not a JSON object");
        }
        let ctx = self.context.clone();
        self.scope()?.unit.publish(&ctx, &event_type, key, payload);
        Ok(())
    }
}

impl calls::Host for InstanceState {
    fn call(
        &mut self,
        context: String,
        mut request: types::Request,
    ) -> wasmtime::Result<Result<types::Response, types::ContextError>> {
        request.caller = Some(self.context.to_string());
        let scope = self
            .scope
            .take()
            .ok_or_else(|| wasmtime::format_err!("call outside of a call"))?;
        let runtime = scope.runtime.clone();
        let depth = scope.depth + 1;
        let unit = scope.unit;
        let savepoint = unit.savepoint();
        let (mut unit, result) =
            runtime.call_context(&context, plugin::request_from_wit(request), unit, depth);
        if result.is_err() {
            unit.rollback_to(savepoint);
        }
        self.scope = Some(super::instance::Scope {
            unit,
            runtime,
            depth: depth - 1,
        });
        Ok(result
            .map(plugin::response_to_wit)
            .map_err(plugin::call_error_to_wit))
    }
}

impl logging::Host for InstanceState {
    fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            logging::Level::Debug => crate::log::Level::Debug,
            logging::Level::Info => crate::log::Level::Info,
            logging::Level::Warn => crate::log::Level::Warn,
            logging::Level::Error => crate::log::Level::Error,
        };
        crate::log::write(
            level,
            &format!(
                "[{}] {}",
                self.context,
                message.chars().take(4096).collect::<String>()
            ),
        );
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
