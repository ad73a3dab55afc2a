//! The generated bindings of the `bounded-context` world, and nothing else. The rest of the
//! host names these types only inside `wasm/`.
//!
//! Calls into a component are async: wasm runs on the async worker as a fiber that yields at
//! every epoch tick, so a long call shares the worker instead of holding it. Of the imports,
//! only `calls.call` is async (it awaits the callee); the others answer at once.

wasmtime::component::bindgen!({
    world: "bounded-context",
    path: "../wit",
    imports: {
        "carshare:context/calls.call": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    ownership: Borrowing { duplicate_if_necessary: true },
});
