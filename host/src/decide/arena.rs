//! One allocation in the guest for all the strings of `decide`'s arguments.
//!
//! The canonical ABI copies each string into the guest through its own call
//! of the guest's `cabi_realloc`: some 45 calls from the host into Wasm per
//! decision on the sample events, each paying wasmtime's entry into guest
//! code and its trap handling, ~9 % of a decision. For a plugin that
//! allocates with the SDK's bump allocator (`tidings_sdk::alloc`), the host
//! instead asks once for room for all of them and copies them in one after
//! the other; the lists around them are still allocated one call each.
//!
//! Sharing one allocation is safe with that allocator because it never
//! reuses memory below its top: freeing or growing a string moves the free
//! pointer only for a block that ends exactly at it, which a string inside
//! the shared allocation does only when it is the last one. Any other
//! allocator may free each string on its own and hand its memory out again,
//! so a plugin that does not declare the bump allocator (a custom section the
//! SDK puts into the component) gets the canonical one call per string.
//!
//! The counters are atomics only because wasmtime's lowering traits require
//! `Sync`; one decision lowers its arguments on one thread.

#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
    wasmtime_environ::component::StringEncoding,
};
use wasmtime::component::{ComponentType, Lower};

/// The custom section the SDK's bump allocator puts into a plugin
/// (`tidings_sdk::alloc`), holding the version of what it declares.
const BUMP_ALLOC_SECTION: &str = "tidings:bump-alloc";

/// Whether `component` declares the SDK's bump allocator: a custom section
/// [`BUMP_ALLOC_SECTION`] holding `1` in any of its modules. A plugin that
/// declares it falsely only corrupts its own memory, in its own instance.
pub fn declares_bump_alloc(component: &[u8]) -> bool {
    wasmparser::Parser::new(0)
        .parse_all(component)
        .map_while(Result::ok)
        .any(|payload| match payload {
            wasmparser::Payload::CustomSection(section) => {
                section.name() == BUMP_ALLOC_SECTION && section.data() == [1]
            }
            _ => false,
        })
}

/// Room in the guest for the strings of one call's arguments.
#[derive(Debug, Default)]
pub struct Arena {
    /// Whether the plugin allows one allocation for all strings.
    shared: bool,
    /// Bytes of all the strings, counted as the arguments are built.
    total: AtomicUsize,
    allocated: AtomicBool,
    /// The next free byte and the end of the allocation, in guest memory.
    next: AtomicUsize,
    end: AtomicUsize,
}

impl Arena {
    /// An arena that shares one allocation if `shared`, and otherwise lets
    /// every string be lowered the canonical way.
    pub fn new(shared: bool) -> Self {
        Self {
            shared,
            ..Self::default()
        }
    }

    /// A string of the arguments, counted into the allocation.
    pub fn str<'a>(&'a self, text: &'a str) -> Str<'a> {
        self.total.fetch_add(text.len(), Relaxed);
        Str { text, arena: self }
    }

    /// Copy `text` into the shared allocation; `None` when it must be lowered
    /// the canonical way.
    fn place<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        text: &str,
    ) -> wasmtime::Result<Option<usize>> {
        if !self.shared || !matches!(cx.options().string_encoding, StringEncoding::Utf8) {
            return Ok(None);
        }
        if !self.allocated.load(Relaxed) {
            let total = self.total.load(Relaxed);
            let base = cx.realloc(0, 0, 1, total)?;
            self.next.store(base, Relaxed);
            self.end.store(base + total, Relaxed);
            self.allocated.store(true, Relaxed);
        }
        let at = self.next.load(Relaxed);
        let until = at + text.len();
        if until > self.end.load(Relaxed) {
            wasmtime::bail!("a string of the arguments was not counted into their allocation");
        }
        cx.as_slice_mut()
            .get_mut(at..until)
            .ok_or_else(|| wasmtime::format_err!("the arguments' allocation is beyond memory"))?
            .copy_from_slice(text.as_bytes());
        self.next.store(until, Relaxed);
        Ok(Some(at))
    }
}

/// A `string` of `decide`'s arguments, placed by its [`Arena`].
#[derive(Debug, Clone, Copy)]
pub struct Str<'a> {
    text: &'a str,
    arena: &'a Arena,
}

impl PartialEq<&str> for Str<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

// SAFETY: `Str` has the canonical ABI of `str` (a pointer and a length) and
// checks its type exactly as `str` does.
unsafe impl ComponentType for Str<'_> {
    type Lower = <str as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <str as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <str as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: a string is stored as `str` stores it: a UTF-8 copy inside guest
// memory (bounds-checked against the allocation and memory), then its
// pointer and length at `offset`.
unsafe impl Lower for Str<'_> {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        // Only a call with few enough parameters passes strings flat; not
        // `decide`. Lower such a string the canonical way.
        self.text.linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let Some(at) = self.arena.place(cx, self.text)? else {
            return self.text.linear_lower_to_memory(cx, ty, offset);
        };
        let pointer = u32::try_from(at)?;
        let length = u32::try_from(self.text.len())?;
        *cx.get::<4>(offset) = pointer.to_le_bytes();
        *cx.get::<4>(offset + 4) = length.to_le_bytes();
        Ok(())
    }
}
