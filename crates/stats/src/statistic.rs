//! Sufficient statistics of one arm, as gbstats 0.8.0 models them: the only data the tests ever see.

use crate::error::{Error, finite};

/// Sum and sum of squares of a numeric metric over `n` units (gbstats `SampleMeanStatistic`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleMeanStatistic {
    pub n: u64,
    pub sum: f64,
    pub sum_squares: f64,
}

/// Count of successes among `n` units (gbstats `ProportionStatistic`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProportionStatistic {
    pub n: u64,
    pub sum: f64,
}

/// Either moment statistic: what a ratio's numerator or a CUPED covariate is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Moments {
    Mean(SampleMeanStatistic),
    Proportion(ProportionStatistic),
}

/// A ratio metric `Σm / Σd` with the delta-method variance (gbstats `RatioStatistic`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioStatistic {
    pub n: u64,
    pub numerator: Moments,
    pub denominator: Moments,
    /// `Σ m·d` over units.
    pub sum_of_products: f64,
}

/// CUPED: a post-period metric adjusted by its pre-period covariate (gbstats `RegressionAdjustedStatistic`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegressionAdjustedStatistic {
    pub n: u64,
    pub post: Moments,
    pub pre: Moments,
    /// `Σ post·pre` over units.
    pub sum_of_products: f64,
    /// The adjustment coefficient; tests recompute it jointly over both arms, as gbstats does.
    pub theta: f64,
}

/// The statistic of one arm, whatever the metric kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    Mean(SampleMeanStatistic),
    Proportion(ProportionStatistic),
    Ratio(RatioStatistic),
    RegressionAdjusted(RegressionAdjustedStatistic),
}

/// `sum / n`, or 0 for an empty arm as gbstats returns.
fn mean_of(sum: f64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The unbiased covariance from sums, 0 for `n <= 1`.
fn covariance_of(sum_of_products: f64, sum_x: f64, sum_y: f64, n: u64) -> f64 {
    if n <= 1 {
        return 0.0;
    }
    let n = n as f64;
    (sum_of_products - sum_x * sum_y / n) / (n - 1.0)
}

impl SampleMeanStatistic {
    /// Validates that the sums can come from `n >= 1` real numbers.
    pub fn new(n: u64, sum: f64, sum_squares: f64) -> Result<Self, Error> {
        if n == 0 {
            return Err(Error::EmptySample { n });
        }
        finite("sum", sum)?;
        finite("sum of squares", sum_squares)?;
        let minimum = sum * sum / n as f64;
        // Rounding in the caller's sums may put an exactly constant sample a few ulps below the bound.
        if sum_squares < minimum - 1e-12 * minimum.abs() {
            return Err(Error::SumOfSquaresTooSmall {
                sum_squares,
                minimum,
            });
        }
        Ok(Self {
            n,
            sum,
            sum_squares,
        })
    }

    pub fn mean(&self) -> f64 {
        mean_of(self.sum, self.n)
    }

    /// The unbiased sample variance, 0 for `n <= 1`.
    pub fn variance(&self) -> f64 {
        if self.n <= 1 {
            return 0.0;
        }
        let n = self.n as f64;
        (self.sum_squares - self.sum.powi(2) / n) / (n - 1.0)
    }
}

impl ProportionStatistic {
    /// Validates `0 <= sum <= n` and `n >= 1`.
    pub fn new(n: u64, sum: f64) -> Result<Self, Error> {
        if n == 0 {
            return Err(Error::EmptySample { n });
        }
        if !(finite("sum", sum)? >= 0.0 && sum <= n as f64) {
            return Err(Error::SuccessesOutOfRange { sum, n });
        }
        Ok(Self { n, sum })
    }

    pub fn mean(&self) -> f64 {
        mean_of(self.sum, self.n)
    }

    /// `p (1 - p)`, the Bernoulli variance gbstats uses (no `n - 1` correction).
    pub fn variance(&self) -> f64 {
        let p = self.mean();
        p * (1.0 - p)
    }
}

impl Moments {
    pub fn n(&self) -> u64 {
        match self {
            Moments::Mean(s) => s.n,
            Moments::Proportion(s) => s.n,
        }
    }

    pub fn sum(&self) -> f64 {
        match self {
            Moments::Mean(s) => s.sum,
            Moments::Proportion(s) => s.sum,
        }
    }

    /// For a proportion the sum of squares equals the sum (every value is 0 or 1).
    pub fn sum_squares(&self) -> f64 {
        match self {
            Moments::Mean(s) => s.sum_squares,
            Moments::Proportion(s) => s.sum,
        }
    }

    pub fn mean(&self) -> f64 {
        match self {
            Moments::Mean(s) => s.mean(),
            Moments::Proportion(s) => s.mean(),
        }
    }

    pub fn variance(&self) -> f64 {
        match self {
            Moments::Mean(s) => s.variance(),
            Moments::Proportion(s) => s.variance(),
        }
    }

    /// Pools two arms into one statistic over `n` units (gbstats `create_joint_statistic`).
    pub fn joint(&self, other: &Moments, n: u64) -> Result<Moments, Error> {
        match (self, other) {
            (Moments::Proportion(a), Moments::Proportion(b)) => {
                Ok(Moments::Proportion(ProportionStatistic {
                    n,
                    sum: a.sum + b.sum,
                }))
            }
            (Moments::Mean(a), Moments::Mean(b)) => Ok(Moments::Mean(SampleMeanStatistic {
                n,
                sum: a.sum + b.sum,
                sum_squares: a.sum_squares + b.sum_squares,
            })),
            _ => Err(Error::MixedStatisticKinds),
        }
    }
}

impl RatioStatistic {
    /// `Σm / Σd`, or 0 when the denominator sums to 0.
    pub fn mean(&self) -> f64 {
        let denominator = self.denominator.sum();
        if denominator == 0.0 {
            0.0
        } else {
            self.numerator.sum() / denominator
        }
    }

    pub fn covariance(&self) -> f64 {
        covariance_of(
            self.sum_of_products,
            self.numerator.sum(),
            self.denominator.sum(),
            self.n,
        )
    }

    /// Delta-method variance of the ratio of means, with the cross term.
    pub fn variance(&self) -> f64 {
        let mean_d = self.denominator.mean();
        if mean_d == 0.0 || self.n <= 1 {
            return 0.0;
        }
        let mean_m = self.numerator.mean();
        self.numerator.variance() / mean_d.powi(2)
            - 2.0 * self.covariance() * mean_m / mean_d.powi(3)
            + mean_m.powi(2) * self.denominator.variance() / mean_d.powi(4)
    }
}

impl RegressionAdjustedStatistic {
    /// The adjusted mean `post - θ·pre`.
    pub fn mean(&self) -> f64 {
        self.post.mean() - self.theta * self.pre.mean()
    }

    pub fn covariance(&self) -> f64 {
        covariance_of(
            self.sum_of_products,
            self.post.sum(),
            self.pre.sum(),
            self.n,
        )
    }

    /// `Var(post) + θ² Var(pre) - 2θ Cov(post, pre)`, 0 for `n <= 1`.
    pub fn variance(&self) -> f64 {
        if self.n <= 1 {
            return 0.0;
        }
        self.post.variance() + self.theta.powi(2) * self.pre.variance()
            - 2.0 * self.theta * self.covariance()
    }
}

/// The CUPED coefficient pooled over both arms (gbstats `compute_theta`), 0 when either pooled variance is 0.
pub fn compute_theta(
    a: &RegressionAdjustedStatistic,
    b: &RegressionAdjustedStatistic,
) -> Result<f64, Error> {
    let n = a.n + b.n;
    let post = a.post.joint(&b.post, n)?;
    let pre = a.pre.joint(&b.pre, n)?;
    if pre.variance() == 0.0 || post.variance() == 0.0 {
        return Ok(0.0);
    }
    let sum_of_products = a.sum_of_products + b.sum_of_products;
    Ok(covariance_of(sum_of_products, post.sum(), pre.sum(), n) / pre.variance())
}

impl Statistic {
    pub fn n(&self) -> u64 {
        match self {
            Statistic::Mean(s) => s.n,
            Statistic::Proportion(s) => s.n,
            Statistic::Ratio(s) => s.n,
            Statistic::RegressionAdjusted(s) => s.n,
        }
    }

    pub fn mean(&self) -> f64 {
        match self {
            Statistic::Mean(s) => s.mean(),
            Statistic::Proportion(s) => s.mean(),
            Statistic::Ratio(s) => s.mean(),
            Statistic::RegressionAdjusted(s) => s.mean(),
        }
    }

    /// The mean before any regression adjustment: the baseline relative lifts divide by.
    pub fn unadjusted_mean(&self) -> f64 {
        match self {
            Statistic::RegressionAdjusted(s) => s.post.mean(),
            other => other.mean(),
        }
    }

    pub fn variance(&self) -> f64 {
        match self {
            Statistic::Mean(s) => s.variance(),
            Statistic::Proportion(s) => s.variance(),
            Statistic::Ratio(s) => s.variance(),
            Statistic::RegressionAdjusted(s) => s.variance(),
        }
    }

    /// gbstats declines to test an arm whose variance is zero or negative.
    pub fn has_zero_variance(&self) -> bool {
        self.variance() <= 0.0
    }
}

/// Sets the pooled CUPED coefficient on both arms when both are regression adjusted (gbstats `BaseABTest`).
///
/// With a zero coefficient gbstats falls back to the post-period statistics, which test identically.
pub fn with_pooled_theta(a: &Statistic, b: &Statistic) -> Result<(Statistic, Statistic), Error> {
    let (Statistic::RegressionAdjusted(ra), Statistic::RegressionAdjusted(rb)) = (a, b) else {
        return Ok((*a, *b));
    };
    let theta = compute_theta(ra, rb)?;
    let adjusted = |s: &RegressionAdjustedStatistic| {
        Statistic::RegressionAdjusted(RegressionAdjustedStatistic { theta, ..*s })
    };
    Ok((adjusted(ra), adjusted(rb)))
}
