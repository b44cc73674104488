// SPDX-License-Identifier: GPL-2.0

//! KUnit tests for building requests: what the device would be given, checked without a device.

use crate::prelude::*;

#[kunit_tests(rust_virtqueue)]
mod suite {
    use super::super::{
        Buffer,
        Entries,
        Request,
        Sg,
        MAX_PARTS, //
    };
    use crate::{
        alloc::VVec,
        bindings,
        prelude::*, //
    };

    /// A buffer made of whatever parts a test wants, in order.
    struct Parts {
        reads: KVec<KVec<u8>>,
        big: Option<VVec<u8>>,
        writes: KVec<KVec<u8>>,
        /// Describe a readable part after the writable ones (out of order).
        late_read: bool,
    }

    impl Parts {
        fn new(reads: &[usize], writes: &[usize]) -> Result<KBox<Self>> {
            let mut r = KVec::new();
            for &n in reads {
                let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
                v.resize(n, 0xa5, GFP_KERNEL)?;
                r.push(v, GFP_KERNEL)?;
            }
            let mut w = KVec::new();
            for &n in writes {
                let mut v = KVec::with_capacity(n, GFP_KERNEL)?;
                v.resize(n, 0, GFP_KERNEL)?;
                w.push(v, GFP_KERNEL)?;
            }
            Ok(KBox::new(
                Self {
                    reads: r,
                    big: None,
                    writes: w,
                    late_read: false,
                },
                GFP_KERNEL,
            )?)
        }
    }

    impl Buffer for Parts {
        fn describe<'a>(&'a mut self, sg: &mut Sg<'a>) -> Result {
            for r in self.reads.iter() {
                sg.device_reads(r)?;
            }
            if let Some(big) = &self.big {
                sg.device_reads(big)?;
            }
            for w in self.writes.iter_mut() {
                sg.device_writes(w)?;
            }
            if self.late_read {
                if let Some(r) = self.reads.first() {
                    sg.device_reads(r)?;
                }
            }
            Ok(())
        }
    }

    /// The entries of list `i` of a request: (page, offset in it, length) each.
    fn list<B: Buffer>(req: &Request<B>, i: usize) -> KVec<(usize, u32, u32)> {
        let mut out = KVec::new();
        let entries: &[bindings::scatterlist] = match &req.sgs {
            Entries::Inline(sgs) => sgs,
            Entries::Allocated(sgs) => sgs,
        };
        let mut sg = entries[req.heads[i]..].as_ptr().cast_mut();
        while !sg.is_null() {
            // SAFETY: `sg` walks a list built by `Request::new`, which owns it.
            let entry = unsafe { (bindings::sg_page(sg) as usize, (*sg).offset, (*sg).length) };
            assert!(out.push(entry, GFP_KERNEL).is_ok());
            // SAFETY: As above; the last entry is marked as the end.
            sg = unsafe { bindings::sg_next(sg) };
        }
        out
    }

    /// Whether list `i` of `req` is one entry naming `parts[i]` (its start and length, in
    /// linear-map memory) for every part.
    fn one_linear_entry_each<B: Buffer>(req: &Request<B>, parts: &[(*const u8, u32)]) -> bool {
        parts.iter().enumerate().all(|(i, &(p, len))| {
            let (page, offset) = linear(p);
            list(req, i).as_slice() == [(page, offset, len)]
        })
    }

    /// Where linear-map memory at `p` is: (page, offset in it).
    fn linear(p: *const u8) -> (usize, u32) {
        // SAFETY: `p` points into a live kmalloc allocation of the test.
        let page = unsafe { bindings::virt_to_page(p.cast()) } as usize;
        (page, (p as usize % bindings::PAGE_SIZE) as u32)
    }

    #[test]
    fn linear_parts_are_one_entry_each_in_order() -> Result {
        let req = Request::new(Parts::new(&[24, 5000], &[408])?, GFP_KERNEL)?;
        assert!(matches!(req.sgs, Entries::Inline(_)));
        // The inline lists are still lists once the request has moved (here to the heap).
        let req = KBox::new(req, GFP_KERNEL)?;
        assert_eq!((req.out, req.ins), (2, 1));
        let parts = [
            (req.buf.reads[0].as_ptr(), 24u32),
            (req.buf.reads[1].as_ptr(), 5000),
            (req.buf.writes[0].as_ptr(), 408),
        ];
        assert!(one_linear_entry_each(&req, &parts));
        Ok(())
    }

    /// A buffer whose parts live in the box itself, as a command's header and response do;
    /// `big` is larger than the largest kmalloc cache, so the box is a compound page.
    #[derive(Zeroable)]
    struct InBox {
        cmd: [u8; 24],
        big: [u8; 3 * bindings::PAGE_SIZE],
        resp: [u8; 24],
    }

    impl Buffer for InBox {
        fn describe<'a>(&'a mut self, sg: &mut Sg<'a>) -> Result {
            sg.device_reads(&self.cmd)?;
            sg.device_reads(&self.big)?;
            sg.device_writes(&mut self.resp)
        }
    }

    #[test]
    fn parts_in_the_box_are_one_linear_entry_each() -> Result {
        // Made in place: `big` does not fit on the stack.
        let mut boxed: KBox<InBox> = KBox::init(pin_init::init_zeroed(), GFP_KERNEL)?;
        boxed.cmd.fill(1);
        boxed.big.fill(2);
        let req = Request::new(boxed, GFP_KERNEL)?;
        assert_eq!((req.out, req.ins), (2, 1));
        let parts = [
            (req.buf.cmd.as_ptr(), 24u32),
            (req.buf.big.as_ptr(), 3 * bindings::PAGE_SIZE as u32),
            (req.buf.resp.as_ptr(), 24),
        ];
        assert!(one_linear_entry_each(&req, &parts));
        Ok(())
    }

    #[test]
    fn four_entries_stay_inline_and_five_are_allocated() -> Result {
        let four = Request::new(Parts::new(&[24, 5000, 16], &[408])?, GFP_KERNEL)?;
        assert!(matches!(four.sgs, Entries::Inline(_)));
        let five = Request::new(Parts::new(&[24, 5000, 16, 8], &[408])?, GFP_KERNEL)?;
        assert!(matches!(five.sgs, Entries::Allocated(_)));
        assert_eq!((five.out, five.ins), (4, 1));
        for i in 0..5 {
            assert_eq!(list(&five, i).len(), 1);
        }
        Ok(())
    }

    #[test]
    fn vmalloc_parts_are_split_at_page_boundaries() -> Result {
        let page_size = bindings::PAGE_SIZE;
        let len = 3 * page_size + 100;
        let mut big = VVec::with_capacity(len, GFP_KERNEL)?;
        big.resize(len, 0x5a, GFP_KERNEL)?;
        let mut parts = Parts::new(&[], &[16])?;
        parts.big = Some(big);
        let req = Request::new(parts, GFP_KERNEL)?;
        assert!(matches!(req.sgs, Entries::Allocated(_)));
        assert_eq!((req.out, req.ins), (1, 1));

        let start = req.buf.big.as_ref().map_or(0, |b| b.as_ptr() as usize);
        let got = list(&req, 0);
        // vmalloc memory starts page-aligned: 3 full pages and 100 bytes.
        assert_eq!(got.len(), 4);
        let mut total = 0;
        for &(page, offset, l) in got.iter() {
            // Each entry names the page vmalloc maps at that point of the part.
            // SAFETY: The address lies within `big`, which is vmalloc memory.
            let want = unsafe { bindings::vmalloc_to_page((start + total) as *const _) } as usize;
            assert_eq!(page, want);
            assert_eq!(offset as usize, (start + total) % page_size);
            total += l as usize;
        }
        assert_eq!(total, len);
        Ok(())
    }

    #[test]
    fn bad_descriptions_are_refused() -> Result {
        let none = Request::new(Parts::new(&[], &[])?, GFP_KERNEL);
        assert_eq!(none.err(), Some(EINVAL));

        let empty = Request::new(Parts::new(&[0], &[8])?, GFP_KERNEL);
        assert_eq!(empty.err(), Some(EINVAL));

        let mut late = Parts::new(&[8], &[8])?;
        late.late_read = true;
        assert_eq!(Request::new(late, GFP_KERNEL).err(), Some(EINVAL));

        let many = [8usize; MAX_PARTS + 1];
        assert_eq!(
            Request::new(Parts::new(&many, &[])?, GFP_KERNEL).err(),
            Some(E2BIG)
        );
        let most = [8usize; MAX_PARTS];
        assert!(Request::new(Parts::new(&most, &[])?, GFP_KERNEL).is_ok());
        Ok(())
    }
}
