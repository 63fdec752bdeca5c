//! The distinct error texts the engine holds for records' histories, within a fixed budget.
//!
//! A retried record keeps the errors of its first and latest failed attempts. The texts come
//! from the service, or from whatever answers in its place (a proxy, an emulator, a broken
//! gateway), and each answer may hold a different text per entry: kept per record, they would
//! grow with the records, outside `max_outstanding_bytes`. Here every distinct (code, message)
//! is held once, shared by every record whose history names it, and all of them together take
//! at most [`ERROR_TEXT_BUDGET`] (a fixed part of the memory beyond the limit); past it, an error keeps its code (from a bounded set) and
//! loses its message.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::memory::ERROR_TEXT_BUDGET;
use crate::outcome::AttemptError;

/// What an entry costs beyond its text: the `Arc`'s counts, the two `String`s and the set's slot.
const ENTRY_OVERHEAD: usize = 96;

/// The most codes kept for errors whose messages did not fit in the budget.
const MAX_OVERFLOW_CODES: usize = 64;

/// The message of an error whose own did not fit.
const DROPPED: &str =
    "(message not kept: the producer already holds its budget of distinct error texts)";

#[derive(Debug, Default)]
pub(super) struct ErrorTexts {
    held: BTreeSet<Arc<AttemptError>>,
    bytes: usize,
    /// New distinct errors since the texts no one else holds were last let go: letting go walks
    /// every entry, so it waits for a quarter as many new ones to have come.
    added_since_release: usize,
    /// By code, the errors whose messages did not fit.
    overflow: BTreeMap<Arc<str>, Arc<AttemptError>>,
    /// For codes past [`MAX_OVERFLOW_CODES`].
    other: Option<Arc<AttemptError>>,
}

impl ErrorTexts {
    /// The shared error for `code` and `message` (cut to their caps).
    pub(super) fn error(&mut self, code: &str, message: &str) -> Arc<AttemptError> {
        let error = AttemptError::shared(code, message);
        if let Some(held) = self.held.get(&error) {
            return Arc::clone(held);
        }
        self.added_since_release += 1;
        let cost = error.text_bytes() + ENTRY_OVERHEAD;
        if self.bytes + cost > ERROR_TEXT_BUDGET {
            self.release();
        }
        if self.bytes + cost > ERROR_TEXT_BUDGET {
            return self.without_message(error.code());
        }
        self.bytes += cost;
        self.held.insert(Arc::clone(&error));
        error
    }

    /// Lets go of the texts no record holds any more, unless that was done a short while ago.
    fn release(&mut self) {
        if self.added_since_release < self.held.len() / 4 {
            return;
        }
        self.added_since_release = 0;
        self.held.retain(|error| Arc::strong_count(error) > 1);
        self.bytes = self
            .held
            .iter()
            .map(|error| error.text_bytes() + ENTRY_OVERHEAD)
            .sum();
    }

    fn without_message(&mut self, code: &str) -> Arc<AttemptError> {
        if let Some(error) = self.overflow.get(code) {
            return Arc::clone(error);
        }
        if self.overflow.len() < MAX_OVERFLOW_CODES {
            let error = AttemptError::shared(code, DROPPED);
            self.overflow
                .insert(Arc::from(error.code()), Arc::clone(&error));
            return error;
        }
        Arc::clone(
            self.other
                .get_or_insert_with(|| AttemptError::shared("OtherError", DROPPED)),
        )
    }

    /// How many bytes the held texts take now.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_distinct_error_is_held_once() {
        let mut texts = ErrorTexts::default();
        let a = texts.error("InternalFailure", "Internal service failure.");
        let b = texts.error("InternalFailure", "Internal service failure.");
        assert!(Arc::ptr_eq(&a, &b));
        let c = texts.error("InternalFailure", "another");
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn distinct_texts_past_the_budget_keep_their_code_and_lose_their_message() {
        let mut texts = ErrorTexts::default();
        let long = "x".repeat(64 * 1024);
        let mut pinned = Vec::new();
        for n in 0..10_000 {
            // Every text different, as a hostile answer's, and every one held by a record.
            let error = texts.error(&format!("Code{}", n % 100), &format!("{n}{long}"));
            pinned.push(error);
            assert!(texts.bytes() <= ERROR_TEXT_BUDGET);
        }
        let text: usize = texts.held.iter().map(|e| e.text_bytes()).sum::<usize>()
            + texts
                .overflow
                .values()
                .map(|e| e.text_bytes())
                .sum::<usize>();
        assert!(
            text <= ERROR_TEXT_BUDGET + MAX_OVERFLOW_CODES * 256,
            "{text}"
        );
        let last = pinned.last().unwrap();
        assert_eq!(last.message(), DROPPED);
        assert!(last.code() == "Code99" || last.code() == "OtherError");
        assert_eq!(texts.overflow.len(), MAX_OVERFLOW_CODES);
    }

    #[test]
    fn texts_no_record_holds_make_room_for_new_ones() {
        let mut texts = ErrorTexts::default();
        let long = "y".repeat(400);
        for n in 0..100_000 {
            // Each error dropped at once: its record finished.
            let error = texts.error("InternalFailure", &format!("{n}{long}"));
            assert_ne!(error.message(), DROPPED, "at {n}");
        }
        assert!(texts.bytes() <= ERROR_TEXT_BUDGET);
    }
}
