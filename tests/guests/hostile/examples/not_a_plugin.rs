//! A valid component that exports no `tidings:notify/plugin`: only a `run`
//! function of its own world. The host must refuse it at load time as "not a
//! plugin".

// The generated bindings are the component's ABI glue, unsafe by nature.
#[allow(unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        inline: "
            package hostile:not-a-plugin;

            world not-a-plugin {
                export run: func() -> string;
            }
        ",
    });

    use super::NotAPlugin;
    export!(NotAPlugin);
}

struct NotAPlugin;

impl bindings::Guest for NotAPlugin {
    fn run() -> String {
        "hello".to_owned()
    }
}
