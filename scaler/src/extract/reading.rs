//! A reading stored flat: one exactly sized allocation of numbers per scrape, described by a
//! [`Shape`] that the readings of a source share while it does not change.
//!
//! A window keeps a reading per scrape for its whole length, thousands of targets at a time, so
//! a reading holds only its numbers: each scalar, then per histogram its count, its sum and its
//! bucket counts. Which input is absent, a scalar or a histogram (with how many buckets, where,
//! and the bucket bounds) is the shape's. Numbers are kept as their bits in 32-bit words: an
//! `f64` takes two, and a histogram whose bucket counts are all whole numbers that fit a `u32`
//! (nearly every histogram: they count events) keeps one word per bucket. Accessors rebuild the
//! same `f64`s bit for bit.

use std::mem::size_of;
use std::sync::{Arc, Mutex};

/// One input's value, owned: how readings are built by hand, and what tests compare.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Absent,
    Scalar(f64),
    Histogram(Hist),
}

/// An owned cumulative histogram with bounds in seconds, sorted by bound, `+Inf` last when
/// exposed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hist {
    bounds: Vec<f64>,
    counts: Vec<f64>,
    pub count: f64,
    pub sum: f64,
}

impl Hist {
    /// A histogram of `(bound, cumulative count)` buckets sorted by bound.
    pub fn new(buckets: Vec<(f64, f64)>, count: f64, sum: f64) -> Hist {
        let (bounds, counts) = buckets.into_iter().unzip();
        Hist {
            bounds,
            counts,
            count,
            sum,
        }
    }

    /// The histogram as a reading's histograms are read.
    pub fn view(&self) -> HistRef<'_> {
        HistRef {
            bounds: &self.bounds,
            counts: Counts(CountsRepr::Float(&self.counts)),
            count: self.count,
            sum: self.sum,
        }
    }

    /// The `(bound, cumulative count)` buckets, ascending.
    pub fn buckets(&self) -> impl ExactSizeIterator<Item = (f64, f64)> + '_ {
        self.bounds.iter().copied().zip(self.counts.iter().copied())
    }

    /// The buckets as a vector (for callers that index or compare them).
    pub fn to_buckets(&self) -> Vec<(f64, f64)> {
        self.buckets().collect()
    }

    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    pub fn counts(&self) -> &[f64] {
        &self.counts
    }
}

/// One input's value, borrowed from a [`Reading`].
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    Absent,
    Scalar(f64),
    Histogram(HistRef<'a>),
}

impl ValueRef<'_> {
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Absent => Value::Absent,
            ValueRef::Scalar(v) => Value::Scalar(v),
            ValueRef::Histogram(h) => Value::Histogram(h.to_hist()),
        }
    }

    pub fn is_absent(self) -> bool {
        matches!(self, ValueRef::Absent)
    }
}

/// A histogram borrowed from a reading (or from a [`Hist`]).
#[derive(Debug, Clone, Copy)]
pub struct HistRef<'a> {
    bounds: &'a [f64],
    counts: Counts<'a>,
    pub count: f64,
    pub sum: f64,
}

impl<'a> HistRef<'a> {
    /// No buckets, no observations: what an absent histogram implied to be empty reads as.
    pub const EMPTY: HistRef<'static> = HistRef {
        bounds: &[],
        counts: Counts(CountsRepr::Float(&[])),
        count: 0.0,
        sum: 0.0,
    };

    /// Upper bounds, ascending.
    pub fn bounds(&self) -> &'a [f64] {
        self.bounds
    }

    /// Cumulative counts, the i-th for the i-th bound.
    pub fn counts(&self) -> Counts<'a> {
        self.counts
    }

    /// The `(bound, cumulative count)` buckets, ascending.
    pub fn buckets(&self) -> impl ExactSizeIterator<Item = (f64, f64)> + 'a {
        self.bounds.iter().copied().zip(self.counts.iter())
    }

    pub fn to_buckets(&self) -> Vec<(f64, f64)> {
        self.buckets().collect()
    }

    pub fn to_hist(&self) -> Hist {
        Hist::new(self.to_buckets(), self.count, self.sum)
    }

    /// Whether the bounds are the same memory as `other`'s (readings of one shape): equal
    /// without comparing them.
    pub fn shares_bounds_with(&self, other: &HistRef<'_>) -> bool {
        !self.bounds.is_empty() && std::ptr::eq(self.bounds, other.bounds)
    }
}

/// A histogram's cumulative bucket counts, as `f64`s, wherever they are stored.
#[derive(Debug, Clone, Copy)]
pub struct Counts<'a>(CountsRepr<'a>);

#[derive(Debug, Clone, Copy)]
enum CountsRepr<'a> {
    /// An owned histogram's.
    Float(&'a [f64]),
    /// One word per count: whole numbers that fit a `u32`.
    Whole(&'a [u32]),
    /// Two words per count: an `f64`'s bits, low word first.
    Bits(&'a [u32]),
}

impl<'a> Counts<'a> {
    pub fn len(&self) -> usize {
        match self.0 {
            CountsRepr::Float(c) => c.len(),
            CountsRepr::Whole(w) => w.len(),
            CountsRepr::Bits(w) => w.len() / 2,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> Option<f64> {
        match self.0 {
            CountsRepr::Float(c) => c.get(i).copied(),
            CountsRepr::Whole(w) => w.get(i).map(|&c| f64::from(c)),
            CountsRepr::Bits(w) => f64_at(w, i.checked_mul(2)?),
        }
    }

    pub fn iter(&self) -> CountsIter<'a> {
        CountsIter {
            counts: *self,
            next: 0,
            end: self.len(),
        }
    }

    pub fn to_vec(&self) -> Vec<f64> {
        self.iter().collect()
    }
}

impl<'a> IntoIterator for Counts<'a> {
    type Item = f64;
    type IntoIter = CountsIter<'a>;
    fn into_iter(self) -> CountsIter<'a> {
        self.iter()
    }
}

#[derive(Debug, Clone)]
pub struct CountsIter<'a> {
    counts: Counts<'a>,
    next: usize,
    end: usize,
}

impl Iterator for CountsIter<'_> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        if self.next >= self.end {
            return None;
        }
        let c = self.counts.get(self.next);
        self.next += 1;
        c
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for CountsIter<'_> {}

/// The `f64` whose bits are `words[at]` (low) and `words[at + 1]` (high).
fn f64_at(words: &[u32], at: usize) -> Option<f64> {
    let lo = *words.get(at)?;
    let hi = *words.get(at + 1)?;
    Some(f64::from_bits(u64::from(lo) | (u64::from(hi) << 32)))
}

fn push_f64(words: &mut Vec<u32>, v: f64) {
    let bits = v.to_bits();
    // Truncation intended: the low and the high half of the bits.
    words.push(bits as u32);
    words.push((bits >> 32) as u32);
}

/// Whether `c` is stored exactly by one `u32` word (not `-0.0`, no fraction, in range).
fn fits_word(c: f64) -> bool {
    f64::from(c as u32).to_bits() == c.to_bits()
}

/// Where an input's numbers are in a reading's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Absent,
    /// Two words.
    Scalar {
        at: usize,
    },
    /// Count and sum (two words each), then the bucket counts: one word each if `whole`, else
    /// two. The bounds are the shape's `bounds[bounds_at..bounds_at + buckets]`.
    Histogram {
        at: usize,
        bounds_at: usize,
        buckets: usize,
        whole: bool,
    },
}

/// What a reading's words mean: per input, absent, a scalar or a histogram, and where. Shared by
/// `Arc` among the readings that have it: a source's targets usually expose the same inputs with
/// the same buckets on every scrape.
#[derive(Debug)]
pub struct Shape {
    slots: Box<[Slot]>,
    /// Every histogram's bounds, one after another.
    bounds: Box<[f64]>,
    /// Words a reading of this shape holds.
    words: usize,
}

impl Shape {
    /// Same slots and bounds (bitwise, so `-0.0` and `0.0` differ as the readings would).
    fn same(&self, slots: &[Slot], bounds: &[f64], words: usize) -> bool {
        self.words == words
            && *self.slots == *slots
            && self.bounds.len() == bounds.len()
            && self
                .bounds
                .iter()
                .zip(bounds)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// Heap bytes, by `size_of`, of the shape behind its `Arc` (header included).
    pub fn heap_bytes(&self) -> usize {
        2 * size_of::<usize>()
            + size_of::<Shape>()
            + std::mem::size_of_val(&*self.slots)
            + std::mem::size_of_val(&*self.bounds)
    }
}

/// A target's inputs at one scrape, indexed like the profile's inputs. Cloning shares the
/// numbers.
#[derive(Debug, Clone)]
pub struct Reading {
    shape: Arc<Shape>,
    /// Exactly `shape.words` words.
    words: Arc<[u32]>,
}

impl Default for Reading {
    fn default() -> Reading {
        ReadingBuilder::default().finish(None)
    }
}

impl Reading {
    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.shape.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shape.slots.is_empty()
    }

    /// Input `i`'s value; `None` past the last input.
    pub fn get(&self, i: usize) -> Option<ValueRef<'_>> {
        let w = &*self.words;
        Some(match *self.shape.slots.get(i)? {
            Slot::Absent => ValueRef::Absent,
            Slot::Scalar { at } => ValueRef::Scalar(f64_at(w, at)?),
            Slot::Histogram {
                at,
                bounds_at,
                buckets,
                whole,
            } => {
                let start = at + 4;
                let counts = if whole {
                    CountsRepr::Whole(w.get(start..start + buckets)?)
                } else {
                    CountsRepr::Bits(w.get(start..start + 2 * buckets)?)
                };
                ValueRef::Histogram(HistRef {
                    bounds: self.shape.bounds.get(bounds_at..bounds_at + buckets)?,
                    counts: Counts(counts),
                    count: f64_at(w, at)?,
                    sum: f64_at(w, at + 2)?,
                })
            }
        })
    }

    /// The inputs' values in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = ValueRef<'_>> + '_ {
        // Every slot is in range by construction (see `ReadingBuilder::finish`).
        (0..self.len()).map(|i| self.get(i).unwrap_or(ValueRef::Absent))
    }

    pub fn to_values(&self) -> Vec<Value> {
        self.iter().map(ValueRef::to_value).collect()
    }

    /// Whether both readings are described by the same shape allocation.
    pub fn shares_shape_with(&self, other: &Reading) -> bool {
        Arc::ptr_eq(&self.shape, &other.shape)
    }

    /// Takes `other`'s shape if it describes this reading too, so a target's window keeps one.
    pub fn share_shape(&mut self, other: &Reading) {
        if !Arc::ptr_eq(&self.shape, &other.shape)
            && other
                .shape
                .same(&self.shape.slots, &self.shape.bounds, self.shape.words)
        {
            self.shape = other.shape.clone();
        }
    }

    /// Heap bytes of the numbers (the words behind their `Arc`, header included); the shape is
    /// counted apart ([`Self::shape`]), being shared.
    pub fn heap_bytes(&self) -> usize {
        2 * size_of::<usize>() + std::mem::size_of_val(&*self.words)
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }
}

impl From<Vec<Value>> for Reading {
    fn from(values: Vec<Value>) -> Reading {
        values.into_iter().collect()
    }
}

impl FromIterator<Value> for Reading {
    fn from_iter<I: IntoIterator<Item = Value>>(values: I) -> Reading {
        let mut b = ReadingBuilder::default();
        for v in values {
            match v {
                Value::Absent => b.absent(),
                Value::Scalar(x) => b.scalar(x),
                Value::Histogram(h) => {
                    let buckets = h.bounds.iter().copied().zip(h.counts.iter().copied());
                    b.histogram(buckets, h.count, h.sum)
                }
            }
        }
        b.finish(None)
    }
}

/// A reading being built, input by input; reused across scrapes so building allocates only the
/// reading (and a shape when it changed).
#[derive(Debug, Default)]
pub(crate) struct ReadingBuilder {
    slots: Vec<Slot>,
    bounds: Vec<f64>,
    words: Vec<u32>,
}

/// The last shape a source's readings had, so its targets' readings share one.
pub(crate) type ShapeCache = Mutex<Option<Arc<Shape>>>;

impl ReadingBuilder {
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.bounds.clear();
        self.words.clear();
    }

    pub(crate) fn absent(&mut self) {
        self.slots.push(Slot::Absent);
    }

    pub(crate) fn scalar(&mut self, v: f64) {
        self.slots.push(Slot::Scalar {
            at: self.words.len(),
        });
        push_f64(&mut self.words, v);
    }

    /// A histogram of `(bound, cumulative count)` buckets sorted by bound.
    pub(crate) fn histogram(
        &mut self,
        buckets: impl ExactSizeIterator<Item = (f64, f64)> + Clone,
        count: f64,
        sum: f64,
    ) {
        let whole = buckets.clone().all(|(_, c)| fits_word(c));
        self.slots.push(Slot::Histogram {
            at: self.words.len(),
            bounds_at: self.bounds.len(),
            buckets: buckets.len(),
            whole,
        });
        push_f64(&mut self.words, count);
        push_f64(&mut self.words, sum);
        for (le, c) in buckets {
            self.bounds.push(le);
            if whole {
                // Exact: checked by `fits_word`.
                self.words.push(c as u32);
            } else {
                push_f64(&mut self.words, c);
            }
        }
    }

    /// The reading, with `cache`'s shape if it is the same (and the new shape cached if not).
    pub(crate) fn finish(&self, cache: Option<&ShapeCache>) -> Reading {
        let n = self.words.len();
        let new = || {
            Arc::new(Shape {
                slots: self.slots.as_slice().into(),
                bounds: self.bounds.as_slice().into(),
                words: n,
            })
        };
        let shape = match cache {
            Some(cache) => {
                let mut cached = cache.lock().unwrap_or_else(|e| e.into_inner());
                match &*cached {
                    Some(s) if s.same(&self.slots, &self.bounds, n) => s.clone(),
                    _ => cached.insert(new()).clone(),
                }
            }
            None => new(),
        };
        Reading {
            shape,
            words: self.words.as_slice().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    fn bits(values: &[Value]) -> Vec<(u8, Vec<u64>)> {
        values
            .iter()
            .map(|v| match v {
                Value::Absent => (0, vec![]),
                Value::Scalar(x) => (1, vec![x.to_bits()]),
                Value::Histogram(h) => {
                    let mut b = vec![h.count.to_bits(), h.sum.to_bits()];
                    for (le, c) in h.buckets() {
                        b.extend([le.to_bits(), c.to_bits()]);
                    }
                    (2, b)
                }
            })
            .collect()
    }

    fn hist(buckets: &[(f64, f64)], count: f64, sum: f64) -> Value {
        Value::Histogram(Hist::new(buckets.to_vec(), count, sum))
    }

    #[test]
    fn round_trips_bit_for_bit() {
        let values = vec![
            Value::Scalar(1.5),
            Value::Absent,
            Value::Scalar(-0.0),
            Value::Scalar(f64::MAX),
            Value::Scalar(5e-324),
            hist(&[(0.005, 1.0), (0.1, 3.0), (INF, 4.0)], 4.0, 0.123_456_789),
            // Counts that are no `u32`: a fraction, -0.0, past u32::MAX, negative.
            hist(&[(0.1, 0.5), (1.0, 2.0), (INF, 3.0)], 3.0, 1.0),
            hist(&[(-1.0, -0.0), (INF, 1.0)], 1.0, 0.0),
            hist(
                &[(1.0, 4_294_967_296.0), (INF, 4_294_967_297.0)],
                4e9,
                1e300,
            ),
            hist(&[(1.0, -2.0), (INF, 1.0)], 1.0, -0.0),
            hist(
                &[(1.0, f64::from(u32::MAX)), (INF, f64::from(u32::MAX))],
                1.0,
                2.0,
            ),
            hist(&[], 0.0, 0.0),
            Value::Scalar(f64::MIN_POSITIVE),
        ];
        let r = Reading::from(values.clone());
        assert_eq!(r.len(), values.len());
        assert_eq!(bits(&r.to_values()), bits(&values));
        assert!(r.get(values.len()).is_none());
    }

    #[test]
    fn absent_is_not_zero() {
        let r = Reading::from(vec![
            Value::Absent,
            Value::Scalar(0.0),
            Value::Absent,
            hist(&[(INF, 0.0)], 0.0, 0.0),
        ]);
        assert!(matches!(r.get(0), Some(ValueRef::Absent)));
        assert!(matches!(r.get(1), Some(ValueRef::Scalar(z)) if z.to_bits() == 0));
        assert!(r.get(2).is_some_and(ValueRef::is_absent));
        assert!(matches!(r.get(3), Some(ValueRef::Histogram(h)) if h.counts().len() == 1));
    }

    #[test]
    fn whole_counts_take_one_word_each_and_others_two() {
        let whole = Reading::from(vec![hist(&[(0.1, 1.0), (1.0, 2.0), (INF, 3.0)], 3.0, 1.0)]);
        let half = Reading::from(vec![hist(&[(0.1, 0.5), (1.0, 2.0), (INF, 3.0)], 3.0, 1.0)]);
        // Count and sum are two words each.
        assert_eq!(whole.words.len(), 4 + 3);
        assert_eq!(half.words.len(), 4 + 6);
        assert_eq!(
            whole.get(0).map(|v| v.to_value()),
            Some(hist(&[(0.1, 1.0), (1.0, 2.0), (INF, 3.0)], 3.0, 1.0))
        );
    }

    #[test]
    fn a_source_shares_one_shape_while_it_does_not_change() {
        let cache = ShapeCache::default();
        let mut b = ReadingBuilder::default();
        let mut build = |bounds: &[f64], absent: bool| {
            b.clear();
            b.scalar(1.0);
            if absent {
                b.absent();
            } else {
                b.histogram(bounds.iter().map(|&le| (le, 1.0)), 1.0, 0.5);
            }
            b.finish(Some(&cache))
        };
        let a = build(&[0.1, INF], false);
        let b2 = build(&[0.1, INF], false);
        let c = build(&[0.2, INF], false);
        let d = build(&[0.2, INF], true);
        let e = build(&[0.2, INF], true);
        assert!(a.shares_shape_with(&b2));
        let (Some(ValueRef::Histogram(ha)), Some(ValueRef::Histogram(hb))) = (a.get(1), b2.get(1))
        else {
            panic!("histograms missing")
        };
        assert!(ha.shares_bounds_with(&hb));
        assert!(!b2.shares_shape_with(&c), "other bounds, other shape");
        assert!(!c.shares_shape_with(&d), "an input gone, other shape");
        assert!(d.shares_shape_with(&e));
        assert_eq!(
            c.get(1).map(|v| v.to_value()),
            Some(hist(&[(0.2, 1.0), (INF, 1.0)], 1.0, 0.5))
        );
    }

    #[test]
    fn share_shape_takes_an_identical_shape_only() {
        let h = |le: f64| Reading::from(vec![hist(&[(le, 1.0), (INF, 2.0)], 2.0, 0.0)]);
        let prev = h(0.1);
        let mut same = h(0.1);
        let mut zero = Reading::from(vec![hist(&[(0.0, 1.0), (INF, 2.0)], 2.0, 0.0)]);
        let neg_zero = Reading::from(vec![hist(&[(-0.0, 1.0), (INF, 2.0)], 2.0, 0.0)]);
        assert!(!same.shares_shape_with(&prev));
        same.share_shape(&prev);
        assert!(same.shares_shape_with(&prev));
        zero.share_shape(&neg_zero);
        assert!(!zero.shares_shape_with(&neg_zero), "bounds compare bitwise");
        assert_eq!(
            zero.get(0).map(|v| v.to_value()),
            Some(hist(&[(0.0, 1.0), (INF, 2.0)], 2.0, 0.0))
        );
    }

    #[test]
    fn counts_index_and_iterate_alike() {
        for c in [[1.0, 2.0, 3.0], [0.5, 2.0, 3.25]] {
            let r = Reading::from(vec![hist(
                &[(0.1, c[0]), (1.0, c[1]), (INF, c[2])],
                3.0,
                0.0,
            )]);
            let Some(ValueRef::Histogram(h)) = r.get(0) else {
                panic!("histogram missing")
            };
            let counts = h.counts();
            assert_eq!(counts.len(), 3);
            assert_eq!(counts.to_vec(), c.to_vec());
            assert_eq!(
                (0..4).map(|i| counts.get(i)).collect::<Vec<_>>(),
                vec![Some(c[0]), Some(c[1]), Some(c[2]), None]
            );
            assert_eq!(counts.iter().len(), 3);
        }
    }
}
