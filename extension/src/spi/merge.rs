//! Two query results in location order (byte order, `ORDER BY ... COLLATE "C"`) read side by
//! side: the twin's functions read each location's state from one cursor and its data from
//! another, two single-table queries that stay fast whatever the planner's statistics (a
//! twin's first large assimilation leaves them stale), instead of one join.

use std::collections::VecDeque;

/// The rows of the second result, taken location by location as the first one asks.
pub struct ByLocation<T> {
    buffered: VecDeque<(String, T)>,
    done: bool,
}

impl<T> Default for ByLocation<T> {
    fn default() -> Self {
        ByLocation {
            buffered: VecDeque::new(),
            done: false,
        }
    }
}

impl<T> ByLocation<T> {
    /// Every row of `location`, dropping the rows of locations before it; `fetch` gives the
    /// next rows of the result in location order (empty at its end).
    pub fn take(&mut self, location: &str, mut fetch: impl FnMut() -> Vec<(String, T)>) -> Vec<T> {
        let mut mine = Vec::new();
        loop {
            while let Some((l, _)) = self.buffered.front() {
                if l.as_bytes() < location.as_bytes() {
                    self.buffered.pop_front();
                } else if l == location {
                    if let Some((_, row)) = self.buffered.pop_front() {
                        mine.push(row);
                    }
                } else {
                    return mine;
                }
            }
            if self.done {
                return mine;
            }
            let more = fetch();
            self.done = more.is_empty();
            self.buffered.extend(more);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_location_gets_its_rows_and_only_its_rows() {
        let mut pages = vec![
            vec![("a".to_string(), 1), ("b".to_string(), 2)],
            vec![("b".to_string(), 3), ("d".to_string(), 4)],
        ]
        .into_iter();
        let mut fetch = || pages.next().unwrap_or_default();
        let mut m = ByLocation::default();
        assert_eq!(m.take("b", &mut fetch), vec![2, 3]);
        assert_eq!(m.take("c", &mut fetch), Vec::<i32>::new());
        assert_eq!(m.take("d", &mut fetch), vec![4]);
        assert_eq!(m.take("e", &mut fetch), Vec::<i32>::new());
    }
}
