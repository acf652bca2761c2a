//! One shutdown signal for the whole daemon: the collector thread checks it
//! between batches (and is woken out of its blocking wait by it), the HTTP
//! server and every follow or tail stream await it.

use std::sync::{Arc, Mutex};

type Wake = Box<dyn Fn() + Send + Sync>;

/// A cloneable handle on the daemon's shutdown: any clone can trigger it,
/// every clone sees it.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    triggered: tokio::sync::watch::Sender<bool>,
    /// Called once on trigger: wakes threads that block outside tokio.
    wakers: Mutex<Vec<Wake>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                triggered: tokio::sync::watch::channel(false).0,
                wakers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts shutting down (idempotent).
    pub fn trigger(&self) {
        if self.inner.triggered.send_replace(true) {
            return;
        }
        let wakers = std::mem::take(&mut *self.wakers());
        for wake in wakers {
            wake();
        }
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.inner.triggered.borrow()
    }

    /// Resolves once shutdown has started.
    pub async fn wait(&self) {
        let mut triggered = self.inner.triggered.subscribe();
        // The sender lives in `self`, so the channel cannot close first.
        let _ = triggered.wait_for(|t| *t).await;
    }

    /// Runs `wake` when shutdown starts (at once if it already has): for a
    /// thread blocked in a system call, such as the collector's watcher.
    pub fn on_trigger(&self, wake: impl Fn() + Send + Sync + 'static) {
        let mut wakers = self.wakers();
        if self.is_triggered() {
            drop(wakers);
            wake();
        } else {
            wakers.push(Box::new(wake));
        }
    }

    /// Triggers on the first SIGINT or SIGTERM (from a thread of its own).
    pub fn on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let shutdown = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    tracing::info!(signal, "Shutting down.");
                    shutdown.trigger();
                }
            })?;
        Ok(())
    }

    fn wakers(&self) -> std::sync::MutexGuard<'_, Vec<Wake>> {
        self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn every_clone_sees_one_trigger_and_wakers_run_once() {
        let shutdown = Shutdown::new();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        shutdown.on_trigger(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        let waiter = tokio::spawn({
            let s = shutdown.clone();
            async move { s.wait().await }
        });
        assert!(!shutdown.is_triggered());
        shutdown.clone().trigger();
        shutdown.trigger();
        waiter.await.unwrap();
        assert!(shutdown.is_triggered());
        assert_eq!(woken.load(Ordering::Relaxed), 1);
        // Registered after the trigger: runs at once.
        let w = woken.clone();
        shutdown.on_trigger(move || {
            w.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(woken.load(Ordering::Relaxed), 2);
        shutdown.wait().await;
    }
}
