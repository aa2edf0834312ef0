//! Calls to the embedding service: forwarded Embed / Similarity, the
//! models it serves (cached for `MODELS_TTL`), and the batched embedding
//! and tokenizing that ingest and search use.

use super::*;

impl Core {
    /// Counts `n` texts the embedding model will read against the caller's
    /// tier: every call that embeds (Embed, Similarity, ingest, search,
    /// RAG, pipelines) comes through here.
    fn charge_inputs(&self, n: usize) -> Result<()> {
        if let (Some(auth), Some(caller)) = (&self.auth, crate::auth::current_caller()) {
            auth.limits.charge_inputs(&caller, n)?;
        }
        Ok(())
    }

    /// Forwards an Embed request unchanged.
    pub async fn embed(
        &self,
        r: emb::EmbedRequest,
        deadline: Deadline,
    ) -> Result<emb::EmbedResponse> {
        self.charge_inputs(r.inputs.len())?;
        Ok(self.embedding.unary(&rpc::EMBED, deadline, r).await?)
    }

    /// Forwards a Similarity request unchanged.
    pub async fn similarity(
        &self,
        r: emb::SimilarityRequest,
        deadline: Deadline,
    ) -> Result<emb::SimilarityResponse> {
        self.charge_inputs(1 + r.texts.len())?;
        Ok(self.embedding.unary(&rpc::SIMILARITY, deadline, r).await?)
    }

    /// The embedding service's models, by name.
    pub async fn embedding_models(&self, deadline: Deadline) -> Result<Vec<emb::ModelInfo>> {
        let m = self.models(deadline, false).await?;
        let mut v: Vec<emb::ModelInfo> = m.by_name.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    pub(super) async fn models(&self, deadline: Deadline, refresh: bool) -> Result<Arc<Models>> {
        if !refresh
            && let Some(m) = self.models.read().ok().and_then(|m| m.clone())
            && m.fetched.elapsed() < MODELS_TTL
        {
            return Ok(m);
        }
        let info = self
            .embedding
            .unary(&rpc::INFO, deadline, emb::InfoRequest {})
            .await?;
        let default = info
            .models
            .iter()
            .find(|m| m.is_default)
            .or(info.models.first())
            .map(|m| m.name.clone())
            .ok_or_else(|| {
                GatewayError::Internal("the embedding service serves no model".into())
            })?;
        let m = Arc::new(Models {
            fetched: Instant::now(),
            by_name: info
                .models
                .into_iter()
                .map(|m| (m.name.clone(), m))
                .collect(),
            default,
            max_client_batch: info.max_client_batch.max(1) as usize,
        });
        if let Ok(mut slot) = self.models.write() {
            *slot = Some(Arc::clone(&m));
        }
        Ok(m)
    }

    /// The model named `name` (empty: the default), refreshing the list
    /// once when it is not known.
    pub(super) async fn model(
        &self,
        name: &str,
        deadline: Deadline,
    ) -> Result<(Arc<Models>, emb::ModelInfo)> {
        for refresh in [false, true] {
            let models = self.models(deadline, refresh).await?;
            let key = if name.is_empty() {
                &models.default
            } else {
                name
            };
            if let Some(m) = models.by_name.get(key).cloned() {
                return Ok((models, m));
            }
            if refresh {
                let mut served: Vec<&str> = models.by_name.keys().map(String::as_str).collect();
                served.sort_unstable();
                return Err(GatewayError::ModelNotFound {
                    model: name.to_owned(),
                    served: served.join(", "),
                });
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    pub(super) async fn embed_texts(
        &self,
        model: &str,
        texts: Vec<String>,
        deadline: Deadline,
    ) -> Result<(Vec<Vec<f32>>, u64)> {
        let n = texts.len();
        let resp = self
            .embed(
                emb::EmbedRequest {
                    inputs: texts,
                    model: model.to_owned(),
                    ..Default::default()
                },
                deadline,
            )
            .await?;
        if resp.embeddings.len() != n {
            return Err(GatewayError::Internal(format!(
                "the embedding service returned {} vectors for {n} inputs",
                resp.embeddings.len()
            )));
        }
        let tokens = resp.usage.map_or(0, |u| u.prompt_tokens);
        Ok((
            resp.embeddings.into_iter().map(|e| e.values).collect(),
            tokens,
        ))
    }

    /// Byte ranges of each text's non-special tokens, and how many special
    /// tokens the model adds per input.
    pub(super) async fn tokenize(
        &self,
        model: &str,
        texts: Vec<String>,
        deadline: Deadline,
    ) -> Result<(Vec<Vec<Range<usize>>>, usize)> {
        let resp = self
            .embedding
            .unary(
                &rpc::TOKENIZE,
                deadline,
                emb::TokenizeRequest {
                    inputs: texts,
                    model: model.to_owned(),
                    truncate: Some(false),
                    ..Default::default()
                },
            )
            .await?;
        let mut specials = 0;
        let ranges = resp
            .inputs
            .into_iter()
            .map(|input| {
                let (special, plain): (Vec<_>, Vec<_>) =
                    input.tokens.into_iter().partition(|t| t.special);
                specials = specials.max(special.len());
                plain
                    .into_iter()
                    .map(|t| t.start as usize..t.end as usize)
                    .collect()
            })
            .collect();
        Ok((ranges, specials))
    }
}
