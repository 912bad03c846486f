"""Data: robust image loading, the embedded photo set, the cartoon target style
and the paired training/evaluation datasets built from them."""
