use super::headers::HeaderMutations;

/// One cluster of a weighted split.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedCluster {
    name: String,
    weight: u32,
    request_headers: HeaderMutations,
    response_headers: HeaderMutations,
}

impl WeightedCluster {
    /// A cluster with its weight.
    pub fn new(name: impl Into<String>, weight: u32) -> Self {
        Self {
            name: name.into(),
            weight,
            request_headers: HeaderMutations::default(),
            response_headers: HeaderMutations::default(),
        }
    }

    /// Sets the header changes made when this cluster is picked.
    pub fn with_headers(mut self, request: HeaderMutations, response: HeaderMutations) -> Self {
        self.request_headers = request;
        self.response_headers = response;
        self
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Header changes for requests sent to it.
    pub fn request_headers(&self) -> &HeaderMutations {
        &self.request_headers
    }

    /// Header changes for responses from it.
    pub fn response_headers(&self) -> &HeaderMutations {
        &self.response_headers
    }
}

/// Why a weighted split is invalid (gRFC A28: the sum must be above zero and fit in 32 bits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WeightedClustersError {
    /// No clusters at all.
    #[error("weighted_clusters has no clusters")]
    Empty,
    /// Every weight is zero.
    #[error("weighted_clusters weights sum to zero")]
    ZeroTotal,
    /// The sum does not fit in 32 bits.
    #[error("weighted_clusters weights sum to {0}, above the 32-bit limit")]
    TotalTooLarge(u64),
}

/// A weighted split across clusters, with the cumulative table built once.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedClusters {
    clusters: Vec<WeightedCluster>,
    /// `cumulative[i]` is the sum of the weights of clusters `0..=i`.
    cumulative: Vec<u64>,
}

impl WeightedClusters {
    /// Builds the split; zero-weight clusters stay listed but are never picked.
    pub fn new(clusters: Vec<WeightedCluster>) -> Result<Self, WeightedClustersError> {
        if clusters.is_empty() {
            return Err(WeightedClustersError::Empty);
        }
        let mut total = 0u64;
        let cumulative = clusters
            .iter()
            .map(|c| {
                total += u64::from(c.weight);
                total
            })
            .collect();
        if total == 0 {
            return Err(WeightedClustersError::ZeroTotal);
        }
        if total > u64::from(u32::MAX) {
            return Err(WeightedClustersError::TotalTooLarge(total));
        }
        Ok(Self {
            clusters,
            cumulative,
        })
    }

    /// The clusters, in order.
    pub fn clusters(&self) -> &[WeightedCluster] {
        &self.clusters
    }

    /// The sum of the weights.
    pub fn total_weight(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Picks a cluster with probability weight / total, from a uniformly random `random`.
    pub fn pick(&self, random: u64) -> &WeightedCluster {
        let total = self.total_weight().max(1);
        let point = random % total;
        // The first cluster whose cumulative weight is above the point.
        let idx = self.cumulative.partition_point(|&c| c <= point);
        &self.clusters[idx.min(self.clusters.len() - 1)]
    }
}
