//! The plugin's memory allocator: a bump allocator.
//!
//! The host runs every decision in a fresh instance and throws it away
//! afterwards, so memory never needs to be handed back to be reused:
//! allocating is moving a pointer, and freeing gives memory back only when
//! it is the latest allocation (which covers a `String` or `Vec` growing at
//! the end of the heap, and temporaries freed in reverse order). With the
//! general-purpose allocator Rust links by default, the sample rule ran
//! 35,170 Wasm instructions per decision; with this one it runs 17,783.
//!
//! Memory still grows a page at a time with `memory.grow`, so the host's
//! memory limit applies exactly as before. A rule that allocates and frees a
//! lot within one decision uses more memory than it would with a freeing
//! allocator; such a rule can turn off the SDK's default `bump-alloc`
//! feature to get Rust's default allocator back.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A Wasm page.
pub const PAGE: usize = 64 << 10;

/// The memory a [`Bump`] allocates from: linear memory in a plugin, a test
/// double natively.
pub trait Memory {
    /// Where the heap starts and where memory currently ends (addresses).
    fn heap(&self) -> (usize, usize);
    /// Grow memory by `pages`; the address the new pages start at, or
    /// `None` when memory cannot grow.
    fn grow(&self, pages: usize) -> Option<usize>;
}

/// A plugin's linear memory (memory 0), the heap starting after the stack
/// and static data.
#[cfg(target_arch = "wasm32")]
#[derive(Debug, Default)]
pub struct LinearMemory;

#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    /// Where the linker ends the stack and static data.
    static __heap_base: u8;
}

#[cfg(target_arch = "wasm32")]
impl Memory for LinearMemory {
    fn heap(&self) -> (usize, usize) {
        let base = ptr::addr_of!(__heap_base) as usize;
        (base, std::arch::wasm32::memory_size(0) * PAGE)
    }

    fn grow(&self, pages: usize) -> Option<usize> {
        match std::arch::wasm32::memory_grow(0, pages) {
            usize::MAX => None,
            old => Some(old * PAGE),
        }
    }
}

/// A bump allocator over the top of a [`Memory`] (see the module docs).
/// Plugins are single-threaded; the atomics are plain loads and stores.
#[derive(Debug)]
pub struct Bump<M> {
    memory: M,
    /// The next free byte; 0 until the first allocation.
    next: AtomicUsize,
    /// The end of memory as far as this allocator knows.
    end: AtomicUsize,
}

impl<M: Memory> Bump<M> {
    /// An allocator that starts at `memory`'s heap on first use.
    pub const fn new(memory: M) -> Self {
        Self {
            memory,
            next: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
        }
    }

    /// The free region `[next, end)`, set up on first use.
    fn region(&self) -> (usize, usize) {
        let next = self.next.load(Relaxed);
        if next != 0 {
            return (next, self.end.load(Relaxed));
        }
        let (base, end) = self.memory.heap();
        self.next.store(base, Relaxed);
        self.end.store(end, Relaxed);
        (base, end)
    }

    /// Grow memory by at least `bytes` past `end`; false when it cannot
    /// grow. If something else grew memory meanwhile, the new pages do not
    /// start at `end`, and the free region starts again in them.
    fn grow(&self, end: usize, bytes: usize) -> bool {
        let pages = bytes.div_ceil(PAGE);
        let Some(from) = self.memory.grow(pages) else {
            return false;
        };
        if from != end {
            self.next.store(from, Relaxed);
        }
        self.end.store(from + pages * PAGE, Relaxed);
        true
    }

    /// Take `size` bytes aligned to `align` from the free region, growing
    /// memory if needed; their start, or `None` when memory cannot grow.
    fn reserve(&self, size: usize, align: usize) -> Option<usize> {
        loop {
            let (next, end) = self.region();
            let start = next.checked_add(align - 1)? & !(align - 1);
            let stop = start.checked_add(size)?;
            if stop <= end {
                self.next.store(stop, Relaxed);
                return Some(start);
            }
            if !self.grow(end, stop - end) {
                return None;
            }
        }
    }
}

// SAFETY: every block returned lies in memory between the heap's start and
// the end of memory, is aligned as asked, and is never handed out again
// while live: the free pointer only moves back over a block being freed or
// resized that ends exactly at it.
unsafe impl<M: Memory> GlobalAlloc for Bump<M> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.reserve(layout.size(), layout.align()) {
            Some(start) => start as *mut u8,
            None => ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let start = block as usize;
        if start + layout.size() == self.next.load(Relaxed) {
            self.next.store(start, Relaxed);
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = block as usize;
        let old_size = layout.size();
        let (next, end) = self.region();
        if start + old_size == next {
            // The latest block: resize it where it is if memory allows.
            let Some(stop) = start.checked_add(new_size) else {
                return ptr::null_mut();
            };
            if stop <= end
                || (self.grow(end, stop - end)
                    && self.next.load(Relaxed) == next
                    && stop <= self.end.load(Relaxed))
            {
                self.next.store(stop, Relaxed);
                return block;
            }
        } else if new_size <= old_size {
            return block;
        }
        // SAFETY: `layout`'s alignment is valid, and `new_size` rounded up
        // to it does not overflow (the caller's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: the new block is fresh, so the two do not overlap; both are
        // at least `min(old_size, new_size)` long.
        unsafe {
            let moved = self.alloc(new_layout);
            if !moved.is_null() {
                ptr::copy_nonoverlapping(block, moved, old_size.min(new_size));
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Pages of real memory that "grow" up to a limit; `foreign` pages
    /// are taken by someone else before the next grow.
    struct FakeMemory {
        buffer: Vec<u8>,
        base: usize,
        pages: Cell<usize>,
        limit: usize,
        foreign: Cell<usize>,
    }

    impl FakeMemory {
        fn new(pages: usize, limit: usize) -> Self {
            let buffer = vec![0u8; (limit + 1) * PAGE];
            // Page-aligned, like linear memory.
            let base = (buffer.as_ptr() as usize).next_multiple_of(PAGE);
            Self {
                buffer,
                base,
                pages: Cell::new(pages),
                limit,
                foreign: Cell::new(0),
            }
        }
    }

    impl Memory for &FakeMemory {
        fn heap(&self) -> (usize, usize) {
            assert!(!self.buffer.is_empty());
            // The first 100 bytes stand for the stack and static data.
            (self.base + 100, self.base + self.pages.get() * PAGE)
        }

        fn grow(&self, pages: usize) -> Option<usize> {
            let taken = self.foreign.replace(0);
            let old = self.pages.get() + taken;
            if old + pages > self.limit {
                return None;
            }
            self.pages.set(old + pages);
            Some(self.base + old * PAGE)
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("valid layout")
    }

    #[test]
    fn blocks_are_aligned_and_do_not_overlap() {
        let memory = FakeMemory::new(1, 4);
        let bump = Bump::new(&memory);
        let mut blocks = Vec::new();
        for (size, align) in [(3, 1), (8, 8), (1, 1), (100, 16), (7, 4), (64, 64)] {
            let block = unsafe { bump.alloc(layout(size, align)) } as usize;
            assert_eq!(block % align, 0);
            assert!(block >= memory.base + 100);
            blocks.push((block, size));
        }
        for pair in blocks.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:?} overlap");
        }
    }

    #[test]
    fn the_latest_block_is_freed_and_resized_in_place() {
        let memory = FakeMemory::new(1, 4);
        let bump = Bump::new(&memory);
        let first = unsafe { bump.alloc(layout(10, 1)) };
        let second = unsafe { bump.alloc(layout(10, 1)) };
        unsafe { bump.dealloc(second, layout(10, 1)) };
        // Freed at the top: handed out again.
        assert_eq!(unsafe { bump.alloc(layout(10, 1)) }, second);
        // A block that is not the latest is left alone when freed.
        unsafe { bump.dealloc(first, layout(10, 1)) };
        let third = unsafe { bump.alloc(layout(10, 1)) };
        assert_eq!(third as usize, second as usize + 10);

        // Growing the latest block keeps it where it is, even across a
        // memory grow, and keeps its contents.
        unsafe { third.write(42) };
        let grown = unsafe { bump.realloc(third, layout(10, 1), 3 * PAGE) };
        assert_eq!(grown, third);
        assert_eq!(unsafe { grown.read() }, 42);
        assert!(memory.pages.get() >= 4);
    }

    #[test]
    fn an_older_block_is_moved_with_its_contents() {
        let memory = FakeMemory::new(1, 4);
        let bump = Bump::new(&memory);
        let old = unsafe { bump.alloc(layout(4, 4)) };
        unsafe { old.copy_from(b"abcd".as_ptr(), 4) };
        let _later = unsafe { bump.alloc(layout(4, 4)) };
        let moved = unsafe { bump.realloc(old, layout(4, 4), 8) };
        assert_ne!(moved, old);
        assert_eq!(moved as usize % 4, 0);
        assert_eq!(unsafe { std::slice::from_raw_parts(moved, 4) }, b"abcd");
        // Shrinking never moves.
        assert_eq!(unsafe { bump.realloc(old, layout(4, 4), 2) }, old);
    }

    #[test]
    fn memory_grows_as_needed_and_allocation_fails_at_the_limit() {
        let memory = FakeMemory::new(1, 3);
        let bump = Bump::new(&memory);
        let big = unsafe { bump.alloc(layout(2 * PAGE, 8)) };
        assert!(!big.is_null());
        assert_eq!(memory.pages.get(), 3);
        // Nothing left to grow into.
        assert!(unsafe { bump.alloc(layout(PAGE, 1)) }.is_null());
        // Smaller blocks still fit in what is left.
        assert!(!unsafe { bump.alloc(layout(100, 1)) }.is_null());
    }

    #[test]
    fn pages_grown_by_someone_else_are_never_handed_out() {
        let memory = FakeMemory::new(1, 8);
        let bump = Bump::new(&memory);
        let first = unsafe { bump.alloc(layout(PAGE - 200, 1)) } as usize;
        // Two pages after the current end belong to someone else.
        memory.foreign.set(2);
        let second = unsafe { bump.alloc(layout(1000, 1)) } as usize;
        assert!(first < memory.base + PAGE);
        assert!(
            second >= memory.base + 3 * PAGE,
            "{second:#x} is in the foreign pages"
        );
        // The latest block cannot grow into foreign pages either.
        let latest = unsafe { bump.alloc(layout(PAGE - 2000, 1)) };
        memory.foreign.set(1);
        let grown = unsafe { bump.realloc(latest, layout(PAGE - 2000, 1), 2 * PAGE) } as usize;
        assert_ne!(grown, latest as usize);
        let foreign = memory.base + 4 * PAGE..memory.base + 5 * PAGE;
        assert!(!foreign.contains(&grown) && !foreign.contains(&(grown + 2 * PAGE - 1)));
        assert_eq!(grown, memory.base + 5 * PAGE);
    }
}

/// Tells the host that this plugin allocates with [`Bump`], which never
/// hands out again memory below its top, so the host may copy all the
/// strings and lists of `decide`'s arguments into one allocation: one call
/// into the plugin for the lot instead of one for each. The custom section
/// is kept by the linker and by the component tooling (`wasm-component-ld`).
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
#[unsafe(link_section = "tidings:bump-alloc")]
#[used]
static BUMP_ALLOC: [u8; 1] = [1];
