//! The bytes of requests and fetch answers held at once: a server-wide
//! limit, and with tenancy a share of it for each tenant and one for the
//! clients not yet authenticated, so that neither one tenant nor a crowd of
//! anonymous connections can take all of it and stall the others.
//!
//! Permits are bytes. A holder takes its party's share first and then room
//! in the whole, always in that order, so waiting cannot deadlock; a party
//! that has used up its share waits on its own semaphore without holding
//! any of the whole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Who holds budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Party {
    /// Without tenancy: everyone, limited by the whole budget only.
    Everyone,
    /// A connection not authenticated yet.
    Anonymous,
    Tenant(String),
}

pub struct Budget {
    whole: Arc<Semaphore>,
    /// Bytes each party may hold (with tenancy).
    share: usize,
    shares: Mutex<Shares>,
}

#[derive(Default)]
struct Shares {
    by_party: HashMap<Party, Arc<Semaphore>>,
    /// Shares nobody holds are forgotten when the map grows past this.
    prune_at: usize,
}

/// Budget held: released when dropped.
pub struct Held {
    share: Option<OwnedSemaphorePermit>,
    whole: OwnedSemaphorePermit,
}

impl Held {
    /// Splits off `bytes` to hold on to; the rest is released with `self`.
    pub fn split(&mut self, bytes: usize) -> Option<Held> {
        let bytes = bytes.min(self.whole.num_permits());
        let share = match &mut self.share {
            Some(share) => Some(share.split(bytes)?),
            None => None,
        };
        Some(Held {
            share,
            whole: self.whole.split(bytes)?,
        })
    }
}

impl Budget {
    /// A budget of `whole` bytes in all and `share` bytes per party, both
    /// raised to `largest_frame` so that any frame the server accepts
    /// fits, and the share at most the whole.
    pub fn new(whole: usize, share: usize, largest_frame: usize) -> Budget {
        let whole = whole.max(largest_frame).min(Semaphore::MAX_PERMITS);
        let share = share.max(largest_frame).min(whole);
        Budget {
            whole: Arc::new(Semaphore::new(whole)),
            share,
            shares: Mutex::new(Shares {
                by_party: HashMap::new(),
                prune_at: 64,
            }),
        }
    }

    /// The most a fetch answer may hold: half a share. (A fetch holds
    /// nothing else while it waits: its request's frame is released
    /// first.)
    pub fn largest_answer(&self) -> usize {
        self.share / 2
    }

    /// Waits for `bytes` of `party`'s share and of the whole.
    pub async fn acquire(&self, party: &Party, bytes: usize) -> Held {
        let bytes = u32::try_from(bytes.min(self.share)).unwrap_or(u32::MAX);
        let share = match party {
            Party::Everyone => None,
            party => Some(
                self.share_of(party)
                    .acquire_many_owned(bytes)
                    .await
                    .expect("shares are never closed"),
            ),
        };
        let whole = self
            .whole
            .clone()
            .acquire_many_owned(bytes)
            .await
            .expect("the budget is never closed");
        Held { share, whole }
    }

    fn share_of(&self, party: &Party) -> Arc<Semaphore> {
        let mut shares = self.shares.lock().unwrap_or_else(|e| e.into_inner());
        // Shares nobody holds or waits for are forgotten whenever the map
        // has doubled, so tenants that come and go leave nothing behind.
        if shares.by_party.len() >= shares.prune_at {
            let full = self.share;
            shares
                .by_party
                .retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < full);
            shares.prune_at = (2 * shares.by_party.len()).max(64);
        }
        shares
            .by_party
            .entry(party.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_party_past_its_share_waits_without_taking_from_the_others() {
        let budget = Arc::new(Budget::new(300, 100, 10));
        let greedy = Party::Tenant("greedy".into());
        let held = budget.acquire(&greedy, 100).await;
        // More for the same tenant waits for its own share...
        let waiting = tokio::spawn({
            let budget = budget.clone();
            let greedy = greedy.clone();
            async move { budget.acquire(&greedy, 50).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        // ...while another tenant and anonymous clients are served.
        let _other = budget.acquire(&Party::Tenant("other".into()), 100).await;
        let _anonymous = budget.acquire(&Party::Anonymous, 100).await;
        drop(held);
        let _later = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("served once its share is free")
            .unwrap();
    }

    #[tokio::test]
    async fn split_keeps_part_and_releases_the_rest() {
        let budget = Budget::new(100, 100, 10);
        let party = Party::Tenant("t".into());
        let mut held = budget.acquire(&party, 80).await;
        let kept = held.split(30).expect("room to split");
        drop(held);
        // 30 still held: 70 more fit, 71 would not.
        let _more = budget.acquire(&party, 70).await;
        assert_eq!(budget.whole.available_permits(), 0);
        drop(kept);
        assert_eq!(budget.whole.available_permits(), 30);
    }
}
