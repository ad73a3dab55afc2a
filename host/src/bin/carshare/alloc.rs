//! The binary's memory allocator: mimalloc, set up before the first allocation.
//!
//! Against glibc's malloc, mimalloc took 5–24 % less CPU per order under load in alternating
//! runs (every unit of work allocates and frees hundreds of small values, many on another
//! thread than the one that allocated them). Out of the box it holds more memory: it commits
//! its 1 GiB arenas eagerly, which on Linux lets the kernel back them with transparent huge
//! pages (42 MiB resident idle and ~180 MiB under load, against 26 / 140 MiB with glibc), and
//! it returns freed pages only after a delay, on the next allocation of the thread that owns
//! them: the compiler threads, idle once the components are compiled, kept 55 MiB resident
//! against glibc's 45. So arenas are committed lazily and freed pages returned at once: that
//! keeps glibc's footprint (26–28 / 149–155 MiB, 46 MiB idle after compiling) and mimalloc's
//! speed (no difference in alternating runs either way). Both are set before anything is
//! allocated, since arenas are made on the first allocation; `MIMALLOC_ARENA_EAGER_COMMIT` and
//! `MIMALLOC_PURGE_DELAY` in the environment still win. Only the binary does this: a program
//! that embeds the library picks its own allocator.
//!
//! Unsafe code: a constructor in `.init_array` (the only way to run before the Rust runtime
//! allocates) and calls into mimalloc's C API.

#![allow(unsafe_code)]

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Options of the mimalloc (v3) that the workspace pins, by their place in `mi_option_t` in
/// its `mimalloc.h` (libmimalloc-sys names no constants for them), with the environment
/// variable that sets each and the value used when it is not set.
const OPTIONS: [(libmimalloc_sys::mi_option_t, &std::ffi::CStr, std::ffi::c_long); 2] = [
    // mi_option_arena_eager_commit
    (4, c"MIMALLOC_ARENA_EAGER_COMMIT", 0),
    // mi_option_purge_delay, in milliseconds
    (15, c"MIMALLOC_PURGE_DELAY", 0),
];

/// Runs before `main` and before any Rust code allocates.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE: extern "C" fn() = configure;

#[cfg(target_os = "linux")]
extern "C" fn configure() {
    for (option, variable, value) in OPTIONS {
        // getenv, not std::env: it must not allocate.
        // SAFETY: the name is a NUL-terminated C string, and nothing else runs yet (this is
        // a constructor, before main), so neither the environment nor mimalloc's options
        // are being changed by another thread.
        unsafe {
            if libc::getenv(variable.as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(option, value);
            }
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The value mimalloc holds for `option`.
    fn get(option: libmimalloc_sys::mi_option_t) -> std::ffi::c_long {
        // SAFETY: reading an option is always allowed.
        unsafe { libmimalloc_sys::mi_option_get(option) }
    }

    /// The constructor ran (tests are a binary of their own, with the same constructor).
    #[test]
    fn the_options_are_set_before_main() {
        if std::env::var_os("CARSHARE_ALLOC_CHILD").is_some() {
            return;
        }
        for (option, variable, value) in OPTIONS {
            let name = variable.to_str().unwrap();
            if std::env::var_os(name).is_none() {
                assert_eq!(get(option), value, "{name}");
            }
        }
    }

    /// Each option's number is the option its variable names: in a child with the variables
    /// set (so the constructor leaves the options alone), mimalloc reads each variable into
    /// the option of that number.
    #[test]
    fn each_number_is_the_option_its_variable_sets() {
        let values = ["1", "7"];
        if std::env::var_os("CARSHARE_ALLOC_CHILD").is_some() {
            for ((option, variable, _), value) in OPTIONS.iter().zip(values) {
                assert_eq!(get(*option).to_string(), value, "{variable:?}");
            }
            return;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "alloc::tests::each_number_is_the_option_its_variable_sets",
            ])
            .env("CARSHARE_ALLOC_CHILD", "1");
        for ((_, variable, _), value) in OPTIONS.iter().zip(values) {
            child.env(variable.to_str().unwrap(), value);
        }
        let out = child.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }
}
