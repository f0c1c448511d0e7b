//! The paper's Table 2 (Istrate et al. 2017, test accuracy in percent on
//! CIFAR-10) and the names the report uses for its networks and methods.

/// The three training methods in the order the paper's columns show them.
pub const METHODS: [&str; 3] = ["baseline", "lookahead", "random"];

/// Column heading of a method, as the paper writes it.
pub fn method_title(method: &str) -> &str {
    match method {
        "baseline" => "Baseline",
        "lookahead" => "Look-ahead",
        "random" => "Random",
        other => other,
    }
}

/// (paper network id, display name, baseline, look-ahead, random).
const TABLE2: [(&str, &str, [f64; 3]); 5] = [
    ("vgg16", "VGG-16", [90.06, 90.50, 88.91]),
    ("resnet20", "ResNet-20", [87.81, 87.52, 79.20]),
    ("resnet32", "ResNet-32", [88.93, 88.90, 79.89]),
    ("resnet44", "ResNet-44", [89.40, 89.32, 80.20]),
    ("resnet56", "ResNet-56", [89.51, 89.56, 80.96]),
];

/// The paper's test accuracy (percent) for a network and method, if the paper reports one.
pub fn paper_accuracy(paper_net: &str, method: &str) -> Option<f64> {
    let col = METHODS.iter().position(|m| *m == method)?;
    TABLE2
        .iter()
        .find(|(id, _, _)| id.eq_ignore_ascii_case(paper_net))
        .map(|(_, _, acc)| acc[col])
}

/// The paper's spelling of a network id (`resnet20` -> `ResNet-20`).
pub fn paper_net_title(paper_net: &str) -> String {
    TABLE2
        .iter()
        .find(|(id, _, _)| id.eq_ignore_ascii_case(paper_net))
        .map_or_else(|| paper_net.to_string(), |(_, t, _)| t.to_string())
}

/// Order of the paper's rows (unknown networks go last).
pub fn paper_rank(paper_net: &str) -> usize {
    TABLE2
        .iter()
        .position(|(id, _, _)| id.eq_ignore_ascii_case(paper_net))
        .unwrap_or(TABLE2.len())
}

/// Order of methods (unknown methods go last).
pub fn method_rank(method: &str) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table2_cells() {
        assert_eq!(paper_accuracy("vgg16", "lookahead"), Some(90.50));
        assert_eq!(paper_accuracy("resnet20", "random"), Some(79.20));
        assert_eq!(paper_accuracy("resnet56", "baseline"), Some(89.51));
        assert_eq!(paper_accuracy("resnet8", "baseline"), None);
        assert_eq!(paper_net_title("resnet44"), "ResNet-44");
    }
}
