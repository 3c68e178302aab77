"""Dynamic price per kWh and sell orders: the documented formula, its examples and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings, strategies as st
from pydantic import ValidationError
import pytest

from peergrid_core.errors import PeerGridValidationError
from peergrid_core.ledger import MarketState, OrderStatus, PricingConfig, SellOrder, price_per_kwh
from peergrid_core.ledger.market import order_total, price_per_token
from peergrid_core.thresholds import BalanceThresholds

DEFAULT = PricingConfig()


def test_defaults() -> None:
    assert DEFAULT.base_price == Decimal("0.25")
    assert DEFAULT.min_price == Decimal("0.05")
    assert DEFAULT.max_price == Decimal("1.00")
    assert DEFAULT.demand_weight == Decimal("0.5")
    assert DEFAULT.currency == "EUR"


def test_worked_example_of_docs_formulas() -> None:
    """docs/formulas.md, "Energy price": the specification's 0.5 kWh report at 3.92 V."""
    # n = 1 + 3 + 1 = 5; imbalance = (3 - 1) / 5 = 0.4; demand = 1 + 0.5 * 0.4 = 1.2
    # raw = 0.25 * 0.9 * 1.2 = 0.27
    price = price_per_kwh(MarketState(donors=1, receivers=3), Decimal("0.9"), DEFAULT)
    assert price == Decimal("0.2700")
    assert str(price) == "0.2700"
    total = order_total(Decimal("0.5"), price)
    assert total == Decimal("0.135")
    assert price_per_token(total, Decimal(450)) == Decimal("0.0003")


def test_worked_rounding_example() -> None:
    # n = 10; imbalance = -0.9; demand = 0.55; raw = 0.25 * 0.5 * 0.55 = 0.06875 -> half even
    price = price_per_kwh(MarketState(donors=9, receivers=0), Decimal("0.5"), DEFAULT)
    assert price == Decimal("0.0688")


def test_worked_clamping_examples() -> None:
    eager = PricingConfig(base_price=Decimal("0.80"), demand_weight=Decimal(1))
    # demand = 1 + 9 / 10 = 1.9; raw = 0.80 * 1 * 1.9 = 1.52 -> max 1.00
    assert price_per_kwh(MarketState(donors=0, receivers=9), 1, eager) == Decimal("1.0000")
    flooded = PricingConfig(demand_weight=Decimal(1))
    # demand = 1 - 19 / 20 = 0.05; raw = 0.25 * 0.5 * 0.05 = 0.00625 -> min 0.05
    assert price_per_kwh(MarketState(donors=19, receivers=0), "0.5", flooded) == Decimal("0.0500")


def test_an_empty_or_balanced_grid_pays_base_times_quality() -> None:
    for state in (MarketState(donors=0, receivers=0), MarketState(donors=4, receivers=4)):
        assert price_per_kwh(state, Decimal("0.9"), DEFAULT) == Decimal("0.2250")
        assert price_per_kwh(state, Decimal(1), DEFAULT) == Decimal("0.2500")


def test_a_zero_weight_ignores_the_market() -> None:
    flat = PricingConfig(demand_weight=Decimal(0))
    assert price_per_kwh(MarketState(donors=0, receivers=50), 1, flat) == Decimal("0.2500")
    assert price_per_kwh(MarketState(donors=50, receivers=0), 1, flat) == Decimal("0.2500")


@pytest.mark.parametrize("factor", [Decimal("1.0001"), Decimal(-1), "NaN", float("inf"), True])
def test_quality_factor_outside_zero_to_one_is_refused(factor: object) -> None:
    with pytest.raises(PeerGridValidationError) as caught:
        price_per_kwh(MarketState(donors=0, receivers=0), factor, DEFAULT)  # type: ignore[arg-type]
    assert caught.value.field == "quality_factor"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_price": Decimal(2)}, "min_price 2 is above max_price"),
        ({"base_price": Decimal("1.5")}, "base_price 1.5 is outside"),
        ({"base_price": Decimal("0.01")}, "base_price 0.01 is outside"),
        ({"demand_weight": Decimal("1.5")}, "demand_weight"),
        ({"base_price": Decimal("0.25001")}, "base_price"),
        ({"min_price": Decimal("-0.01")}, "min_price"),
        ({"currency": "eur"}, "currency"),
        ({"surcharge": Decimal(1)}, "surcharge"),
    ],
)
def test_bad_pricing_is_refused_naming_the_field(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        PricingConfig.model_validate(overrides)


def test_market_state_validation() -> None:
    with pytest.raises(PeerGridValidationError) as caught:
        MarketState(donors=-1, receivers=0)
    assert caught.value.field == "donors"
    with pytest.raises(PeerGridValidationError) as caught:
        MarketState(donors=0, receivers=True)
    assert caught.value.field == "receivers"


def test_market_state_from_soc_uses_the_balancer_thresholds() -> None:
    state = MarketState.from_soc([75.0, 90.0, 50.0, 40.0, 10.0, 70.0], BalanceThresholds())
    assert state == MarketState(donors=3, receivers=2)
    with pytest.raises(PeerGridValidationError) as caught:
        MarketState.from_soc([50.0, 101.0], BalanceThresholds())
    assert caught.value.field == "soc_pct[1]"


# ---------------------------------------------------------------- properties

counts = st.integers(min_value=0, max_value=500)
factors = st.decimals(min_value=0, max_value=1, places=4, allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=0, max_value=5, places=4, allow_nan=False, allow_infinity=False)


@st.composite
def configs(draw: st.DrawFn) -> PricingConfig:
    low, base, high = sorted(draw(st.lists(prices, min_size=3, max_size=3)))
    return PricingConfig(
        base_price=base,
        min_price=low,
        max_price=high,
        demand_weight=draw(factors),
    )


@settings(max_examples=150)
@given(configs(), counts, counts, st.integers(min_value=1, max_value=50), factors)
def test_more_receivers_never_lower_the_price(
    config: PricingConfig, donors: int, receivers: int, more: int, factor: Decimal
) -> None:
    before = price_per_kwh(MarketState(donors=donors, receivers=receivers), factor, config)
    after = price_per_kwh(MarketState(donors=donors, receivers=receivers + more), factor, config)
    assert after >= before


@settings(max_examples=150)
@given(configs(), counts, counts, st.integers(min_value=1, max_value=50), factors)
def test_more_donors_never_raise_the_price(
    config: PricingConfig, donors: int, receivers: int, more: int, factor: Decimal
) -> None:
    before = price_per_kwh(MarketState(donors=donors, receivers=receivers), factor, config)
    after = price_per_kwh(MarketState(donors=donors + more, receivers=receivers), factor, config)
    assert after <= before


@settings(max_examples=150)
@given(configs(), counts, counts, factors, factors)
def test_better_quality_never_lowers_the_price(
    config: PricingConfig, donors: int, receivers: int, first: Decimal, second: Decimal
) -> None:
    low, high = sorted((first, second))
    state = MarketState(donors=donors, receivers=receivers)
    assert price_per_kwh(state, low, config) <= price_per_kwh(state, high, config)


@settings(max_examples=150)
@given(configs(), counts, counts, factors)
def test_price_is_clamped_and_on_the_grid(
    config: PricingConfig, donors: int, receivers: int, factor: Decimal
) -> None:
    price = price_per_kwh(MarketState(donors=donors, receivers=receivers), factor, config)
    assert config.min_price <= price <= config.max_price
    assert price == price.quantize(Decimal("0.0001"))
    assert price.as_tuple().exponent == -4


@settings(max_examples=100)
@given(counts, counts)
def test_strictly_more_demand_raises_an_unclamped_price(donors: int, receivers: int) -> None:
    """Far from the bounds the price really moves (the monotonicity is not vacuous)."""
    wide = PricingConfig(
        base_price=Decimal(100),
        min_price=Decimal(0),
        max_price=Decimal(1000),
        demand_weight=Decimal(1),
    )
    state = MarketState(donors=donors, receivers=receivers)
    busier = MarketState(donors=donors, receivers=receivers + 1)
    assert price_per_kwh(busier, 1, wide) > price_per_kwh(state, 1, wide)


# ---------------------------------------------------------------- sell orders

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _order(**overrides: object) -> SellOrder:
    fields: dict[str, object] = {
        "order_id": "o1",
        "report_id": "r1",
        "seller": "NODE_A",
        "kwh": Decimal("0.5"),
        "tokens": Decimal(450),
        "price_per_kwh": Decimal("0.27"),
        "total_price": Decimal("0.135"),
        "currency": "EUR",
        "status": OrderStatus.OPEN,
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(overrides)
    return SellOrder.model_validate(fields)


def test_sell_order_life_cycle() -> None:
    order = _order()
    assert order.price_per_token == Decimal("0.0003")
    filled = order.with_status(OrderStatus.FILLED, at=T0 + timedelta(minutes=1), buyer="NODE_C")
    assert filled.status is OrderStatus.FILLED
    assert filled.buyer == "NODE_C"
    assert filled.updated_at == T0 + timedelta(minutes=1)
    assert filled.created_at == T0
    reopened = filled.with_status(OrderStatus.OPEN, at=T0 + timedelta(minutes=2))
    assert reopened.buyer is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"total_price": Decimal("0.1351")}, "total_price must be 0.1350000"),
        ({"status": OrderStatus.FILLED}, "buyer is set exactly when the order is filled"),
        ({"buyer": "NODE_C"}, "buyer is set exactly when the order is filled"),
        ({"status": OrderStatus.FILLED, "buyer": "NODE_A"}, "cannot buy its own order"),
        ({"updated_at": T0 - timedelta(seconds=1)}, "updated_at is before created_at"),
        ({"created_at": datetime(2025, 6, 1, 12, 0)}, "timezone"),  # noqa: DTZ001
        ({"kwh": Decimal("-0.5")}, "kwh"),
    ],
)
def test_inconsistent_orders_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _order(**overrides)


def test_order_total_rounds_half_even_to_a_stroop() -> None:
    assert order_total(Decimal("0.123456"), Decimal("0.2500")) == Decimal("0.0308640")
    # 0.000001 kWh * 0.0005 = 5E-10 -> 0 stroops (half even at the 8th decimal and beyond)
    assert order_total(Decimal("0.000001"), Decimal("0.0005")) == Decimal(0)
    with pytest.raises(PeerGridValidationError):
        price_per_token(Decimal(1), Decimal(0))
