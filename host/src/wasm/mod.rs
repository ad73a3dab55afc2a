//! Bounded contexts as WebAssembly components: the generated bindings (`bindings`), the engine
//! and compile cache (`engine`), the store data of an instance (`instance`), the host side of
//! the WIT imports (`imports`), and a loaded component with its pool of reusable instances
//! (`plugin`). Nothing outside this module names a wasmtime or WIT-generated type.

mod bindings;
mod engine;
mod imports;
mod instance;
mod plugin;

pub use engine::WasmEngine;
pub use plugin::{Limits, LoadError, Manifest, Plugin};
