//! A plugin built with the SDK's default features that uses the standard
//! library's stdio, environment and exit, which the SDK's `stdio-log` routes
//! through the contract (`tidings_sdk::stdio`). It uses no other WASI, so its
//! component must import only the contract.
//!
//! The merchant config picks what it does, `{"do": "<name>"}`:
//!
//! - `print`: prints `hello from the plugin` to stdout, `warning from the
//!   plugin` to stderr, then `no newline` to stdout without a newline, and
//!   returns one `order-confirmation` email.
//! - `panic`: `panic!("stdio guest panicked on purpose")`.
//! - `exit`: `std::process::exit(3)`.
//! - `env`: one `order-confirmation` email whose `home` variable is
//!   `std::env::var("HOME")` debug-formatted.

use std::io::Write;

use serde_json::Value;
use tidings_sdk::prelude::*;

struct StdioGuest;

impl Rule for StdioGuest {
    fn decide(_event: &OrderEvent, ctx: &Context) -> Result<Vec<Action>, RuleError> {
        let confirmation = || notify(Channel::Email, "order-confirmation");
        match ctx.config.get("do").and_then(Value::as_str) {
            Some("print") => {
                println!("hello from the plugin");
                eprintln!("warning from the plugin");
                print!("no newline");
                let _ = std::io::stdout().flush();
                Ok(vec![confirmation()])
            }
            Some("panic") => panic!("stdio guest panicked on purpose"),
            Some("exit") => std::process::exit(3),
            Some("env") => Ok(vec![
                confirmation().with("home", format!("{:?}", std::env::var("HOME"))),
            ]),
            _ => Err(RuleError::new(
                "invalid-config",
                "config needs `do`: print, panic, exit or env",
            )),
        }
    }
}

register_rule!(StdioGuest);
