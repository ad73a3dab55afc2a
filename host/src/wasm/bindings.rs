//! The generated bindings of the `bounded-context` world, and nothing else. The rest of the
//! host names these types only inside `wasm/`.

wasmtime::component::bindgen!({
    world: "bounded-context",
    path: "../wit",
    imports: { default: trappable },
});
