//! The one way async code runs blocking SQLite: [`Handle::run`].

use std::sync::{Arc, Mutex, PoisonError};

/// A store connection ([`super::Writer`], [`super::Reader`]) shared by async tasks: each
/// [`Handle::run`] takes the lock and runs its closure on tokio's blocking pool.
///
/// Why the blocking pool (`spawn_blocking`) and not `block_in_place`: `block_in_place` turns
/// the calling worker thread into a blocking one, so on a 2-core Pi half the runtime's workers
/// stop polling other tasks for as long as the query or the fsync takes (tokio hands the
/// worker's queued tasks to a new thread, but only after they have waited), and it panics on a
/// current-thread runtime, which `#[tokio::test]` uses. With `spawn_blocking` the async worker
/// only awaits; concurrent calls on one handle queue on its mutex inside the blocking pool,
/// never on a worker. The closure is `'static`, so it takes what it needs by value and
/// returns it (the committer hands its batch in and gets it back).
pub struct Handle<T> {
    inner: Arc<Mutex<T>>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Handle {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + 'static> Handle<T> {
    pub fn new(t: T) -> Handle<T> {
        Handle {
            inner: Arc::new(Mutex::new(t)),
        }
    }

    /// Runs `f` with the connection on the blocking pool and returns what it returns. A panic in
    /// `f` is resumed in the caller, as if `f` had been called inline; the connection stays
    /// usable after it (a transaction that was open is rolled back when it is dropped during
    /// the unwind), so a poisoned lock is taken over rather than refused.
    pub async fn run<R, F>(&self, f: F) -> R
    where
        F: FnOnce(&mut T) -> R + Send + 'static,
        R: Send + 'static,
    {
        let inner = self.inner.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut t = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut t)
        })
        .await;
        match joined {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // A blocking task is cancelled only when the runtime shuts down, and the runtime
            // drops the tasks awaiting it before it shuts down its blocking pool.
            Err(e) => panic!("blocking store call cancelled while awaited: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_on_a_current_thread_runtime_and_keeps_state() {
        let h = Handle::new(Vec::<u32>::new());
        for i in 0..3 {
            h.clone().run(move |v| v.push(i)).await;
        }
        assert_eq!(h.run(|v| v.clone()).await, vec![0, 1, 2]);
    }

    #[tokio::test]
    async fn a_panic_reaches_the_caller_and_the_handle_stays_usable() {
        let h = Handle::new(1u32);
        let h2 = h.clone();
        let panicked = tokio::spawn(async move { h2.run(|_| panic!("boom")).await }).await;
        assert!(panicked.is_err_and(|e| e.is_panic()));
        assert_eq!(h.run(|n| *n + 1).await, 2);
    }
}
