//! One allocation in the guest for all the strings and lists of `decide`'s
//! arguments.
//!
//! The canonical ABI copies each string and list into the guest through its
//! own call of the guest's `cabi_realloc`: some 60 calls from the host into
//! Wasm per decision on the sample events, each paying wasmtime's entry into
//! guest code and its trap handling: ~15 % of a decision, by what removing
//! them saved (BENCHMARKS.md). For a plugin that allocates with the SDK's
//! bump allocator (`tidings_sdk::alloc`), the host instead asks once for room
//! for all of them and places them one after the other, each aligned as its
//! type needs.
//!
//! Sharing one allocation is safe with that allocator because it never
//! reuses memory below its top: freeing or growing a value moves the free
//! pointer only for a block that ends exactly at it, which a value inside
//! the shared allocation does only when it is the last one. Any other
//! allocator may free each value on its own and hand its memory out again,
//! so a plugin that does not declare the bump allocator (a custom section the
//! SDK puts into the component) gets the canonical one call per value.
//!
//! The counters are atomics only because wasmtime's lowering traits require
//! `Sync`; one decision lowers its arguments on one thread.

#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext, bad_type_info,
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

/// Room in the guest for the strings and lists of one call's arguments.
#[derive(Debug, Default)]
pub struct Arena {
    /// Whether the plugin allows one allocation for all of them.
    shared: bool,
    /// Bytes of all of them, counted as the arguments are built.
    total: AtomicUsize,
    allocated: AtomicBool,
    /// The next free byte and the end of the allocation, in guest memory.
    next: AtomicUsize,
    end: AtomicUsize,
}

impl Arena {
    /// An arena that shares one allocation if `shared`, and otherwise lets
    /// every string and list be lowered the canonical way.
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

    /// A list of the arguments, counted into the allocation with room to
    /// align it.
    pub fn list<'a, T: ComponentType>(&'a self, items: impl IntoIterator<Item = T>) -> List<'a, T> {
        let items: Vec<T> = items.into_iter().collect();
        let room = items.len() * T::SIZE32 + (T::ALIGN32 as usize - 1);
        self.total.fetch_add(room, Relaxed);
        List { items, arena: self }
    }

    /// `size` bytes aligned to `align` in the shared allocation, made on
    /// first use; `None` when the plugin does not allow sharing.
    fn reserve<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        size: usize,
        align: u32,
    ) -> wasmtime::Result<Option<usize>> {
        if !self.shared {
            return Ok(None);
        }
        if !self.allocated.load(Relaxed) {
            let total = self.total.load(Relaxed);
            let base = cx.realloc(0, 0, MAX_ALIGN, total)?;
            self.next.store(base, Relaxed);
            self.end.store(base + total, Relaxed);
            self.allocated.store(true, Relaxed);
        }
        let at = self.next.load(Relaxed).next_multiple_of(align as usize);
        let until = at + size;
        if until > self.end.load(Relaxed) {
            wasmtime::bail!("a value of the arguments was not counted into their allocation");
        }
        self.next.store(until, Relaxed);
        Ok(Some(at))
    }
}

/// The largest alignment of a value in the canonical ABI (`u64`, `f64`).
const MAX_ALIGN: u32 = 8;

/// Store a pointer and a length at `offset` of `memory`, as the canonical ABI
/// stores a string or a list.
///
/// It takes the memory as a slice because every look-up through the
/// `LowerContext` (`as_slice_mut`, `get`) finds the instance's memory again.
/// One look-up per string instead of three, and one for a list's pointer and
/// length instead of two, took ~0.4 µs off a decision (BENCHMARKS.md,
/// 2026-12-07).
fn store_pointer_pair(
    memory: &mut [u8],
    offset: usize,
    at: usize,
    len: usize,
) -> wasmtime::Result<()> {
    let pair = memory
        .get_mut(offset..)
        .and_then(|rest| rest.first_chunk_mut::<8>())
        .ok_or_else(|| wasmtime::format_err!("a pointer of the arguments is beyond memory"))?;
    pair[..4].copy_from_slice(&u32::try_from(at)?.to_le_bytes());
    pair[4..].copy_from_slice(&u32::try_from(len)?.to_le_bytes());
    Ok(())
}

/// A `string` of `decide`'s arguments, placed by its [`Arena`].
#[derive(Debug, Clone, Copy)]
pub struct Str<'a> {
    text: &'a str,
    arena: &'a Arena,
}

#[cfg(test)]
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
        let utf8 = matches!(cx.options().string_encoding, StringEncoding::Utf8);
        let reserved = if utf8 {
            self.arena.reserve(cx, self.text.len(), 1)?
        } else {
            None
        };
        let Some(at) = reserved else {
            return self.text.linear_lower_to_memory(cx, ty, offset);
        };
        let memory = cx.as_slice_mut();
        memory
            .get_mut(at..at + self.text.len())
            .ok_or_else(|| wasmtime::format_err!("the arguments' allocation is beyond memory"))?
            .copy_from_slice(self.text.as_bytes());
        store_pointer_pair(memory, offset, at, self.text.len())
    }
}

/// A `list` of `decide`'s arguments, placed by its [`Arena`].
#[derive(Debug)]
pub struct List<'a, T> {
    items: Vec<T>,
    arena: &'a Arena,
}

impl<T> std::ops::Deref for List<'_, T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

// SAFETY: `List<T>` has the canonical ABI of `[T]` (a pointer and a length)
// and checks its type exactly as `[T]` does.
unsafe impl<T: ComponentType> ComponentType for List<'_, T> {
    type Lower = <[T] as ComponentType>::Lower;
    const ABI: CanonicalAbiInfo = <[T] as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[T] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: a list is stored as `[T]` stores it: its elements one after the
// other, each by `T`'s own lowering, in room aligned for `T` inside the
// allocation (which wasmtime bounds-checks against memory when it is made,
// and `reserve` against the allocation), then its pointer and length at
// `offset`.
unsafe impl<T: Lower> Lower for List<'_, T> {
    fn linear_lower_to_flat<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        // As for `Str`: not how `decide` passes its lists.
        self.items.as_slice().linear_lower_to_flat(cx, ty, dst)
    }

    fn linear_lower_to_memory<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let InterfaceType::List(list) = ty else {
            bad_type_info()
        };
        let element = cx.types[list].element;
        let Some(at) = self
            .arena
            .reserve(cx, self.items.len() * T::SIZE32, T::ALIGN32)?
        else {
            return self.items.as_slice().linear_lower_to_memory(cx, ty, offset);
        };
        T::linear_store_list_to_memory(cx, element, at, &self.items)?;
        store_pointer_pair(cx.as_slice_mut(), offset, at, self.items.len())
    }
}
