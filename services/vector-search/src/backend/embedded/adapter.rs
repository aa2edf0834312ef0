//! The engine adapter: opening the backend and the `Backend` trait
//! over its collections.

use super::*;

impl EmbeddedBackend {
    /// Opens every collection under `settings.data_dir`, replays their
    /// operation logs, and starts the maintenance thread. Blocking.
    pub fn open(settings: &VectorSettings, metrics: Metrics) -> Result<Self, OpenError> {
        let root = settings.data_dir.clone();
        let shown = root.display().to_string();
        let dir_err = |e: io::Error| OpenError::DataDir {
            path: shown.clone(),
            reason: e.to_string(),
        };
        fs::create_dir_all(&root).map_err(dir_err)?;
        let mut collections = HashMap::new();
        for entry in fs::read_dir(&root).map_err(dir_err)? {
            let path = entry.map_err(dir_err)?.path();
            if !path.is_dir() {
                continue;
            }
            if path.join(DELETED_MARKER).exists() || !path.join(META_FILE).exists() {
                tracing::info!(path = %path.display(), "removing a deleted or half-created collection");
                fs::remove_dir_all(&path).map_err(dir_err)?;
                continue;
            }
            let started = Instant::now();
            let c = Collection::open(&path, settings.sync_writes, Tuning::of(settings))?;
            tracing::info!(
                collection = %c.name,
                path = %path.display(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "collection loaded"
            );
            if let Some(other) = collections.insert(c.name.clone(), Arc::new(c)) {
                return Err(OpenError::Collection {
                    name: other.name.clone(),
                    path: path.display().to_string(),
                    reason: format!("a second folder ({}) claims this name", other.dir.display()),
                });
            }
        }
        let backend = Self {
            root,
            sync_writes: settings.sync_writes,
            tuning: Tuning::of(settings),
            collections: Arc::new(RwLock::new(collections)),
            catalog: tokio::sync::Mutex::new(()),
            stop: Arc::new(AtomicBool::new(false)),
            maintenance: Mutex::new(None),
            checkpoint_requested: Arc::new(AtomicBool::new(false)),
        };
        let interval = Duration::from_secs(settings.checkpoint_interval_secs);
        let worker = Maintenance {
            collections: Arc::clone(&backend.collections),
            stop: Arc::clone(&backend.stop),
            checkpoint_requested: Arc::clone(&backend.checkpoint_requested),
            wal_limit_bytes: settings.engine_wal_limit_mb.saturating_mul(1024 * 1024),
            metrics,
        };
        let handle = thread::Builder::new()
            .name("vector-maintenance".into())
            .spawn(move || worker.run(interval))
            .map_err(dir_err)?;
        if let Ok(mut m) = backend.maintenance.lock() {
            *m = Some(handle);
        }
        Ok(backend)
    }

    pub(super) fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .map_err(|_| storage("collection table poisoned"))?
            .get(name)
            .cloned()
            .ok_or_else(|| VectorError::CollectionNotFound { name: name.into() })
    }

    /// Runs `f` on the blocking pool with the named collection.
    pub(super) async fn with<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&Collection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let c = self.collection(name)?;
        tokio::task::spawn_blocking(move || f(&c))
            .await
            .map_err(|e| storage(format!("engine task failed: {e}")))?
    }

    /// Asks the maintenance thread for a checkpoint once a collection's
    /// operation log has grown past `CHECKPOINT_BYTES`.
    fn checkpoint_if_long(&self, log_len: u64) {
        if log_len > CHECKPOINT_BYTES {
            self.checkpoint_requested.store(true, Ordering::Release);
        }
    }

    pub(super) fn edge_config(&self, config: &CollectionConfig) -> EdgeConfig {
        let hnsw = HnswIndexConfig {
            m: config.hnsw.m,
            ef_construct: config.hnsw.ef_construct,
            ..HnswIndexConfig::default()
        };
        let mut vector =
            EdgeVectorParamsBuilder::new(config.dimension, edge_distance(config.distance));
        match config.quantization {
            Quantization::None => {}
            Quantization::Int8 => {
                vector = vector.quantization_config(
                    ScalarQuantizationConfig {
                        r#type: ScalarType::Int8,
                        quantile: Some(INT8_QUANTILE),
                        always_ram: Some(true),
                    }
                    .into(),
                );
            }
        }
        let mut builder = EdgeConfig::builder().vector(edge::DEFAULT_VECTOR_NAME, vector.build());
        let modifier = match config.text_index {
            TextIndex::None => None,
            // The engine weights query terms by their IDF over the
            // collection at search time (see crate::text).
            TextIndex::Bm25 => Some(edge::Modifier::Idf),
            TextIndex::Sparse => Some(edge::Modifier::None),
        };
        if let Some(m) = modifier {
            builder = builder.sparse_vector(
                SPARSE_NAME,
                edge::EdgeSparseVectorParamsBuilder::new()
                    .modifier(m)
                    .build(),
            );
        }
        builder
            .hnsw_config(hnsw)
            .optimizers(self.tuning.applied_to(EdgeOptimizersConfig::default()))
            .build()
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn create_collection(
        &self,
        name: &str,
        config: CollectionConfig,
        metadata: Metadata,
    ) -> Result<()> {
        let _catalog = self.catalog.lock().await;
        if self.collection(name).is_ok() {
            return Err(VectorError::CollectionExists { name: name.into() });
        }
        let dir = self.root.join(format!("{name}-{}", uuid::Uuid::new_v4()));
        let edge_config = self.edge_config(&config);
        let meta = Meta {
            name: name.to_owned(),
            config,
            metadata,
            shard_dir: default_shard_dir(),
        };
        let sync = self.sync_writes;
        let tuning = self.tuning;
        let c = tokio::task::spawn_blocking(move || -> Result<Collection> {
            let built = (|| -> Result<()> {
                fs::create_dir_all(dir.join(SHARD_DIR)).map_err(storage)?;
                // Create, flush and close the shard, then write the meta file
                // last: a crash before that leaves a folder that is removed
                // at the next start.
                drop(EdgeShard::new(&dir.join(SHARD_DIR), edge_config).map_err(storage)?);
                write_atomic(
                    &dir.join(META_FILE),
                    &serde_json::to_vec_pretty(&meta).map_err(storage)?,
                )
                .map_err(storage)
            })();
            if let Err(e) = built {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
            Collection::open(&dir, sync, tuning).map_err(storage)
        })
        .await
        .map_err(storage)??;
        self.collections
            .write()
            .map_err(|_| storage("collection table poisoned"))?
            .insert(name.to_owned(), Arc::new(c));
        Ok(())
    }

    async fn delete_collection(&self, name: &str) -> Result<()> {
        let _catalog = self.catalog.lock().await;
        let c = self
            .collections
            .write()
            .map_err(|_| storage("collection table poisoned"))?
            .remove(name)
            .ok_or_else(|| VectorError::CollectionNotFound { name: name.into() })?;
        tokio::task::spawn_blocking(move || -> Result<()> {
            // The marker makes the delete durable now; the folder is removed
            // once the last in-flight call on the collection has finished.
            write_atomic(&c.dir.join(DELETED_MARKER), b"").map_err(storage)?;
            let dir = c.dir.clone();
            if !drop_when_unique(c, Duration::from_secs(60)) {
                tracing::warn!(path = %dir.display(), "collection still in use; its folder is removed at the next start");
                return Ok(());
            }
            fs::remove_dir_all(&dir).map_err(storage)
        })
        .await
        .map_err(storage)?
    }

    async fn list_collections(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .collections
            .read()
            .map_err(|_| storage("collection table poisoned"))?
            .keys()
            .cloned()
            .collect();
        names.sort();
        Ok(names)
    }

    async fn collection_config(&self, name: &str) -> Result<CollectionConfig> {
        Ok(self.collection(name)?.config())
    }

    async fn collection_info(&self, name: &str) -> Result<CollectionInfo> {
        self.with(name, |c| Ok(c.info())).await
    }

    async fn add_text_index(&self, collection: &str, index: TextIndex) -> Result<()> {
        self.with(collection, move |c| c.add_text_index(index))
            .await
    }

    async fn fill_sparse(
        &self,
        collection: &str,
        key: &str,
        sparse_of: SparseOf,
    ) -> Result<Filled> {
        let key = key.to_owned();
        let (filled, log_len) = self
            .with(collection, move |c| c.fill_sparse(&key, &sparse_of))
            .await?;
        self.checkpoint_if_long(log_len);
        Ok(filled)
    }

    async fn upsert(&self, collection: &str, points: Vec<Point>) -> Result<()> {
        let log_len = self
            .with(collection, move |c| c.write(Op::Upsert(points)))
            .await?;
        self.checkpoint_if_long(log_len);
        Ok(())
    }

    async fn get(
        &self,
        collection: &str,
        ids: Vec<PointId>,
        with_payload: bool,
        with_vectors: bool,
    ) -> Result<Vec<Record>> {
        self.with(collection, move |c| {
            let ids: Vec<_> = ids.into_iter().map(to_edge_id).collect();
            let records = c
                .shard()
                .retrieve(
                    &ids,
                    Some(WithPayloadInterface::Bool(with_payload)),
                    Some(WithVector::Bool(with_vectors)),
                )
                .map_err(storage)?;
            Ok(records
                .into_iter()
                .map(|r| {
                    let (vector, sparse) = vectors_of(r.vector);
                    Record {
                        id: from_edge_id(r.id),
                        payload: with_payload.then(|| payload_of(r.payload)),
                        vector,
                        sparse,
                    }
                })
                .collect())
        })
        .await
    }

    async fn delete(&self, collection: &str, selector: PointSelector) -> Result<()> {
        self.with(collection, move |c| {
            // Resolved under the write lock, so no write can slip in between
            // resolving a filter and deleting what it matched.
            let mut log = c.log.lock().map_err(|_| storage("log lock poisoned"))?;
            let ids = match selector {
                PointSelector::Ids(ids) => ids,
                PointSelector::Filter(f) => c.matching_ids(to_edge_filter(&f)?)?,
            };
            if ids.is_empty() {
                return Ok(());
            }
            c.write_locked(&mut log, Op::Delete(ids)).map(|_| ())
        })
        .await
    }

    async fn count(&self, collection: &str, filter: Option<Filter>) -> Result<u64> {
        self.with(collection, move |c| {
            let filter = filter.as_ref().map(to_edge_filter).transpose()?;
            c.shard()
                .count(CountRequest {
                    filter,
                    exact: true,
                })
                .map(|n| n as u64)
                .map_err(storage)
        })
        .await
    }

    async fn scroll(
        &self,
        collection: &str,
        query: ScrollQuery,
    ) -> Result<(Vec<Record>, Option<PointId>)> {
        self.with(collection, move |c| {
            let filter = query.filter.as_ref().map(to_edge_filter).transpose()?;
            let (records, next) = c
                .shard()
                .scroll(ScrollRequest {
                    offset: query.offset.map(to_edge_id),
                    limit: Some(query.limit),
                    filter,
                    with_payload: Some(WithPayloadInterface::Bool(query.with_payload)),
                    with_vector: WithVector::Bool(query.with_vectors),
                    order_by: None,
                })
                .map_err(storage)?;
            let records = records
                .into_iter()
                .map(|r| {
                    let (vector, sparse) = vectors_of(r.vector);
                    Record {
                        id: from_edge_id(r.id),
                        payload: query.with_payload.then(|| payload_of(r.payload)),
                        vector,
                        sparse,
                    }
                })
                .collect();
            Ok((records, next.map(from_edge_id)))
        })
        .await
    }

    async fn search(&self, collection: &str, queries: Vec<SearchQuery>) -> Result<Vec<Vec<Hit>>> {
        self.with(collection, move |c| {
            queries
                .into_iter()
                .map(|q| {
                    let (wp, wv) = (q.with_payload, q.with_vectors);
                    let query = match q.query {
                        Query::Dense(v) => NamedQuery::default_dense(v),
                        Query::Sparse(s) => NamedQuery {
                            query: VectorInternal::Sparse(to_edge_sparse(s)),
                            using: Some(SPARSE_NAME.into()),
                        },
                    };
                    let request = SearchRequest {
                        query: QueryEnum::Nearest(query),
                        filter: q.filter.as_ref().map(to_edge_filter).transpose()?,
                        params: Some(SearchParams {
                            hnsw_ef: q.ef,
                            exact: q.exact,
                            quantization: Some(QuantizationSearchParams {
                                ignore: false,
                                rescore: Some(q.rescore),
                                oversampling: q.oversampling,
                            }),
                            ..SearchParams::default()
                        }),
                        limit: q.limit,
                        offset: 0,
                        with_payload: Some(WithPayloadInterface::Bool(wp)),
                        with_vector: Some(WithVector::Bool(wv)),
                        score_threshold: q.score_threshold,
                    };
                    let hits = c.shard().search(request).map_err(storage)?;
                    Ok(hits
                        .into_iter()
                        .map(|h| Hit {
                            id: from_edge_id(h.id),
                            score: h.score,
                            payload: wp.then(|| payload_of(h.payload)),
                            vector: vectors_of(h.vector).0,
                            found_by: Vec::new(),
                        })
                        .collect())
                })
                .collect()
        })
        .await
    }

    async fn point_counts(&self) -> Vec<(String, u64)> {
        let collections: Vec<Arc<Collection>> = self
            .collections
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            collections
                .iter()
                .map(|c| (c.name.clone(), c.shard().info().points_count as u64))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    async fn close(&self) {
        self.stop.store(true, Ordering::Release);
        let handle = self.maintenance.lock().ok().and_then(|mut m| m.take());
        let collections: Vec<Arc<Collection>> = self
            .collections
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(h) = handle {
                // An optimisation in progress cannot be interrupted; if one
                // is still running the checkpoint is skipped (the log keeps
                // every write) and the process exits without waiting.
                let deadline = Instant::now() + Duration::from_secs(5);
                while !h.is_finished() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
                if !h.is_finished() {
                    tracing::warn!("an optimisation is still running; skipping the final checkpoint");
                    return;
                }
            }
            for c in collections {
                match c.checkpoint() {
                    Ok(()) => {
                        if let Err(e) = write_atomic(&c.dir.join(CLEAN_FILE), b"") {
                            tracing::warn!(collection = %c.name, error = %e, "cannot mark the shutdown clean; the next start checks for duplicates");
                        }
                    }
                    Err(e) => {
                        tracing::error!(collection = %c.name, error = %e, "final checkpoint failed; the operation log keeps the writes");
                    }
                }
            }
        })
        .await;
    }
}
