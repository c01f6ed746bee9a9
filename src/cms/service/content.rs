//! Content entries: list, read, write, publish, close, export.

use super::*;

impl Service {
    fn entries_key(env: &str, api: &str) -> (String, String) {
        (env.to_owned(), api.to_owned())
    }

    /// The entries of one API in one environment (pointers, copied under the lock): what a
    /// listing then filters, searches and renders without holding it.
    fn snapshot(&self, env: &str, api: &str) -> Result<Vec<Arc<StoredEntry>>, CmsError> {
        let st = self.state.read();
        if !st.apis.contains_key(api) {
            return Err(no_api());
        }
        Ok(st
            .entries
            .get(&Self::entries_key(env, api))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    /// A page of entries as the JSON body of the answer. The page ends after `q.limit`
    /// entries, or earlier once their bytes reach the answer limit (it always holds one); the
    /// answer's `limit` is then the number it holds, so `offset + limit` is the next page.
    pub fn list(&self, env: &str, api: &str, q: &ListQuery) -> Result<String, CmsError> {
        let all = self.snapshot(env, api)?;
        let search = q.q.as_deref().map(Search::new);
        let mut out: Vec<&Entry> = Vec::new();
        for stored in &all {
            let e = &stored.entry;
            let allowed = match e.status() {
                crate::cms::content::Status::Closed => q.include_closed,
                crate::cms::content::Status::Draft => q.include_drafts,
                _ => true,
            };
            // Filters and search see the published version whenever there is one: a newer
            // draft of published content is never matched on its draft values.
            let Some(searched) = e.visible() else {
                continue;
            };
            if allowed
                && q.filter.matches(searched)
                && search.as_ref().is_none_or(|s| s.matches(searched))
            {
                out.push(e);
            }
        }
        out.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        let total = out.len();
        let mut contents = String::from("[");
        let mut shown = 0usize;
        for e in out.into_iter().skip(q.offset).take(q.limit) {
            let version = if q.include_drafts {
                e.draft.as_ref().or(e.published.as_ref())
            } else {
                e.visible()
            };
            let Some(v) = version else { continue };
            let rendered = serde_json::to_string(&e.render(v)).map_err(StoreError::from)?;
            if shown > 0 && contents.len() + rendered.len() > self.limits.max_answer_bytes {
                break;
            }
            if shown > 0 {
                contents.push(',');
            }
            contents.push_str(&rendered);
            shown += 1;
        }
        contents.push(']');
        let limit = if shown < q.limit && q.offset + shown < total {
            shown
        } else {
            q.limit
        };
        Ok(format!(
            r#"{{"contents":{contents},"totalCount":{total},"offset":{},"limit":{limit}}}"#,
            q.offset
        ))
    }

    /// One entry, as the content API answers it (rendered once per version, see
    /// `StoredEntry::answer`). A draft is shown with its draft key or the all-drafts right; a
    /// closed entry only with the all-closed right.
    pub fn get(
        &self,
        env: &str,
        api: &str,
        id: &str,
        draft_key: Option<&str>,
        can_drafts: bool,
        can_closed: bool,
    ) -> Result<Bytes, CmsError> {
        let st = self.state.read();
        if !st.apis.contains_key(api) {
            return Err(no_api());
        }
        let stored = st
            .entries
            .get(&Self::entries_key(env, api))
            .and_then(|m| m.get(id))
            .ok_or_else(|| no_entry(api, id))?;
        let e = &stored.entry;
        if e.closed && !can_closed {
            return Err(no_entry(api, id));
        }
        let key_ok = match (draft_key, &e.draft_key) {
            (Some(given), Some(real)) => {
                subtle::ConstantTimeEq::ct_eq(given.as_bytes(), real.as_bytes()).into()
            }
            _ => false,
        };
        let draft = (key_ok || can_drafts) && e.draft.is_some();
        stored.answer(draft).ok_or_else(|| no_entry(api, id))
    }

    /// Writes one entry (`f` makes the next version from the current one; `None` deletes it),
    /// inside the content limits: a write that grows an entry or an API past them is refused,
    /// one that shrinks them is always taken (the limits may have been lowered since).
    fn write_entry<T>(
        &self,
        env: &str,
        api: &str,
        id: &str,
        f: impl FnOnce(Option<&Entry>, Timestamp) -> Result<(Option<Entry>, T), CmsError>,
    ) -> Result<T, CmsError> {
        let db = self.db.lock();
        let key = Self::entries_key(env, api);
        let (next, out, old_bytes, usage) = {
            let st = self.state.read();
            if !st.apis.contains_key(api) {
                return Err(no_api());
            }
            let existing = st.entries.get(&key).and_then(|m| m.get(id));
            let (next, out) = f(existing.map(|s| &s.entry), Timestamp::now())?;
            let usage = st.usage.get(api).copied().unwrap_or_default();
            (next, out, existing.map(|s| s.bytes), usage)
        };
        let next = match next {
            Some(e) => {
                let doc = crate::cms::store::entry_document(&e)?;
                Some((e, doc))
            }
            None => None,
        };
        let new_bytes = next.as_ref().map(|(_, doc)| doc.len());
        self.within_limits(api, usage, old_bytes, new_bytes)?;
        match &next {
            Some((_, doc)) => db.put_entry(env, api, id, doc)?,
            None => db.delete_entry(env, api, id)?,
        }
        let mut st = self.state.write();
        let usage = st.usage.entry(api.to_owned()).or_default();
        usage.entries = (usage.entries + usize::from(new_bytes.is_some()))
            .saturating_sub(usize::from(old_bytes.is_some()));
        usage.bytes = (usage.bytes + new_bytes.unwrap_or(0) as u64)
            .saturating_sub(old_bytes.unwrap_or(0) as u64);
        let map = st.entries.entry(key).or_default();
        match next {
            Some((entry, doc)) => {
                let bytes = doc.len();
                map.insert(id.to_owned(), Arc::new(StoredEntry::new(entry, bytes)));
            }
            None => {
                map.remove(id);
            }
        }
        Ok(out)
    }

    /// Refuses a write that would take an entry or an API past the content limits.
    fn within_limits(
        &self,
        api: &str,
        usage: ApiUsage,
        old_bytes: Option<usize>,
        new_bytes: Option<usize>,
    ) -> Result<(), CmsError> {
        let (old, new) = (old_bytes.unwrap_or(0), new_bytes.unwrap_or(0));
        if new <= old {
            return Ok(());
        }
        let l = &self.limits;
        if new > l.max_entry_bytes {
            return Err(CmsError::TooLarge(format!(
                "the entry would hold {new} bytes; an entry holds at most {}",
                l.max_entry_bytes
            )));
        }
        if old_bytes.is_none() && usage.entries >= l.max_entries {
            return Err(CmsError::Storage {
                reason: "entry_limit",
                message: format!(
                    "API '{api}' holds {} entries, its limit; delete some first",
                    usage.entries
                ),
            });
        }
        let after = usage.bytes.saturating_sub(old as u64) + new as u64;
        if after > l.max_api_bytes {
            return Err(CmsError::Storage {
                reason: "size_limit",
                message: format!(
                    "API '{api}' would hold {after} bytes of entries; it holds at most {}",
                    l.max_api_bytes
                ),
            });
        }
        Ok(())
    }

    /// Creates an entry (`id` chosen by the caller for PUT, generated for POST), or replaces one.
    /// `drafts`: the caller may read drafts, so its receipt may show the draft key.
    #[allow(clippy::too_many_arguments)]
    pub fn put_entry(
        &self,
        env: &str,
        api: &str,
        id: Option<&str>,
        fields: Map<String, Value>,
        as_: WriteAs,
        replace: bool,
        drafts: bool,
    ) -> Result<(Value, bool), CmsError> {
        let id =
            match id {
                Some(id) if valid_entry_id(id) => id.to_owned(),
                Some(_) => return Err(CmsError::BadRequest(
                    "the entry id in the path is not one (letters, digits, '-', '_', at most 64)"
                        .into(),
                )),
                None => random_token(9).replace(['-', '_'], "x").to_lowercase(),
            };
        let api_name = api.to_owned();
        self.write_entry(env, api, &id.clone(), move |existing, now| {
            if existing.is_some() && !replace {
                return Err(CmsError::Conflict(format!(
                    "an entry with that id already exists in API '{api_name}'"
                )));
            }
            let created = existing.is_none();
            let mut e = existing.cloned().unwrap_or(Entry {
                id: id.clone(),
                created_at: now,
                updated_at: now,
                published_at: None,
                published: None,
                draft: None,
                closed: false,
                draft_key: None,
            });
            e.updated_at = now;
            match as_ {
                WriteAs::Published => {
                    e.published = Some(fields);
                    e.draft = None;
                    e.draft_key = None;
                    e.closed = false;
                    e.published_at = Some(now);
                }
                WriteAs::Draft => {
                    e.draft = Some(fields);
                    e.draft_key.get_or_insert_with(|| random_token(12));
                }
            }
            let body = write_receipt(&e, drafts);
            Ok((Some(e), (body, created)))
        })
    }

    /// Merges `fields` into the entry: into its draft when it has one or `as_` is draft. An
    /// empty merge changes nothing (it makes no draft and no draft key).
    pub fn patch_entry(
        &self,
        env: &str,
        api: &str,
        id: &str,
        fields: Map<String, Value>,
        as_: WriteAs,
        drafts: bool,
    ) -> Result<Value, CmsError> {
        if fields.is_empty() {
            let st = self.state.read();
            if !st.apis.contains_key(api) {
                return Err(no_api());
            }
            let e = st
                .entries
                .get(&Self::entries_key(env, api))
                .and_then(|m| m.get(id))
                .ok_or_else(|| no_entry(api, id))?;
            return Ok(write_receipt(&e.entry, drafts));
        }
        let api_name = api.to_owned();
        self.write_entry(env, api, id, move |existing, now| {
            let mut e = existing.cloned().ok_or_else(|| no_entry(&api_name, id))?;
            let into_draft = as_ == WriteAs::Draft || e.draft.is_some();
            let target = if into_draft {
                let base = e
                    .draft
                    .clone()
                    .or_else(|| e.published.clone())
                    .unwrap_or_default();
                e.draft_key.get_or_insert_with(|| random_token(12));
                e.draft.insert(base)
            } else {
                e.published.get_or_insert_with(Map::new)
            };
            for (k, v) in fields {
                target.insert(k, v);
            }
            e.updated_at = now;
            let body = write_receipt(&e, drafts);
            Ok((Some(e), body))
        })
    }

    pub fn delete_entry(&self, env: &str, api: &str, id: &str) -> Result<(), CmsError> {
        let api_name = api.to_owned();
        self.write_entry(env, api, id, move |existing, _| {
            existing.ok_or_else(|| no_entry(&api_name, id))?;
            Ok((None, ()))
        })
    }

    /// Publishes the entry's draft (or re-opens a closed entry).
    pub fn publish(&self, env: &str, api: &str, id: &str, drafts: bool) -> Result<Value, CmsError> {
        let api_name = api.to_owned();
        self.write_entry(env, api, id, move |existing, now| {
            let mut e = existing.cloned().ok_or_else(|| no_entry(&api_name, id))?;
            if let Some(d) = e.draft.take() {
                e.published = Some(d);
            }
            e.draft_key = None;
            e.closed = false;
            e.published_at = Some(now);
            e.updated_at = now;
            let body = write_receipt(&e, drafts);
            Ok((Some(e), body))
        })
    }

    /// Closes (unpublishes) an entry: only the all-closed right still lists it.
    pub fn close(&self, env: &str, api: &str, id: &str, drafts: bool) -> Result<Value, CmsError> {
        let api_name = api.to_owned();
        self.write_entry(env, api, id, move |existing, now| {
            let mut e = existing.cloned().ok_or_else(|| no_entry(&api_name, id))?;
            if e.published.is_none() {
                e.published = e.draft.take();
            }
            e.closed = true;
            e.updated_at = now;
            let body = write_receipt(&e, drafts);
            Ok((Some(e), body))
        })
    }

    /// A backup of every API and entry of an environment (the `export:write` scope).
    pub fn export(&self, env: &str) -> Value {
        let st = self.state.read();
        let mut apis = Map::new();
        for name in st.apis.keys() {
            let entries: Vec<Value> = st
                .entries
                .get(&Self::entries_key(env, name))
                .map(|m| {
                    m.values()
                        .filter_map(|s| serde_json::to_value(&s.entry).ok())
                        .collect()
                })
                .unwrap_or_default();
            apis.insert(name.clone(), Value::Array(entries));
        }
        json!({"environment": env, "exportedAt": crate::model::rfc3339(Timestamp::now()), "apis": apis})
    }
}

/// What a writer gets back: the id, the status, and the draft key when there is a draft and
/// the writer may read drafts (the key reads the draft, which writing alone does not allow).
fn write_receipt(e: &Entry, drafts: bool) -> Value {
    let mut v = json!({"id": e.id, "status": e.status()});
    if drafts && e.draft.is_some() {
        if let Some(k) = &e.draft_key {
            v["draftKey"] = json!(k);
        }
    }
    v
}

fn valid_entry_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The entry is not there. The API exists (it is checked first), so its name is no secret;
/// the id is not repeated.
fn no_entry(api: &str, _id: &str) -> CmsError {
    CmsError::NotFound(format!("there is no entry with that id in API '{api}'"))
}
