"""The demo store's six products, with SVG pictures drawn by our own code (no network)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from html import escape

CURRENCY = "INR"
LOCALE = "en_IN"


@dataclass(frozen=True)
class Product:
    slug: str
    product_id: int
    variant_id: int
    title: str
    variant_title: str
    price: Decimal
    blurb: str
    # Background and accent colours of the picture.
    background: str
    accent: str
    # SVG elements drawn on a 400×400 canvas, above the caption.
    motif: str

    def image_path(self) -> str:
        return f"/demo-store/images/{self.slug}.svg"

    def image_url(self, app_url: str) -> str:
        return f"{app_url.rstrip('/')}{self.image_path()}"


_KURTA = (
    '<path d="M150 70 L180 60 Q200 85 220 60 L250 70 L300 110 L280 150 L255 135 L255 300 '
    'L145 300 L145 135 L120 150 L100 110 Z" fill="{accent}"/>'
    '<path d="M200 78 L200 170" stroke="#fff" stroke-width="3" stroke-dasharray="6 8"/>'
    '<g fill="#fff" opacity=".55"><circle cx="170" cy="220" r="6"/><circle cx="200" cy="240" r="6"/>'
    '<circle cx="230" cy="220" r="6"/><circle cx="185" cy="270" r="6"/><circle cx="215" cy="270" r="6"/></g>'
)
_DUPATTA = (
    '<path d="M90 80 Q200 40 310 80 L290 300 Q200 270 110 300 Z" fill="{accent}"/>'
    '<g fill="#fde68a">'
    + "".join(f'<circle cx="{x}" cy="{y}" r="7"/>' for x in (140, 180, 220, 260) for y in (120, 170, 220))
    + '</g><path d="M110 300 Q200 270 290 300" stroke="#fde68a" stroke-width="8" fill="none"/>'
)
_CHAPPALS = (
    '<ellipse cx="155" cy="190" rx="45" ry="110" fill="{accent}"/>'
    '<ellipse cx="250" cy="200" rx="45" ry="110" fill="{accent}"/>'
    '<path d="M118 150 Q155 120 192 150" stroke="#fef3c7" stroke-width="14" fill="none"/>'
    '<path d="M213 160 Q250 130 287 160" stroke="#fef3c7" stroke-width="14" fill="none"/>'
    '<circle cx="155" cy="112" r="9" fill="#fef3c7"/><circle cx="250" cy="122" r="9" fill="#fef3c7"/>'
)
_DIYA = (
    '<g><path d="M100 200 Q200 300 300 200 Z" fill="{accent}"/>'
    '<path d="M195 200 Q185 150 205 110 Q225 160 205 200 Z" fill="#f97316"/>'
    '<path d="M200 195 Q195 165 206 140 Q215 170 207 195 Z" fill="#fde047"/></g>'
    '<g fill="{accent}" opacity=".8"><path d="M70 285 Q110 320 150 285 Z"/>'
    '<path d="M250 285 Q290 320 330 285 Z"/></g>'
)
_CHAI = (
    '<rect x="130" y="90" width="140" height="200" rx="14" fill="{accent}"/>'
    '<ellipse cx="200" cy="90" rx="70" ry="16" fill="#fcd34d"/>'
    '<rect x="145" y="150" width="110" height="80" rx="8" fill="#fff7ed"/>'
    '<text x="200" y="198" font-size="26" text-anchor="middle" fill="{accent}" '
    'font-family="Georgia, serif" font-weight="bold">CHAI</text>'
)
_SAREE = (
    '<rect x="90" y="90" width="220" height="200" rx="10" fill="{accent}"/>'
    '<rect x="90" y="250" width="220" height="40" fill="#facc15"/>'
    '<g stroke="#facc15" stroke-width="3" fill="none" opacity=".8">'
    '<path d="M120 130 q20 -20 40 0 t40 0 t40 0 t40 0"/><path d="M120 180 q20 -20 40 0 t40 0 t40 0 t40 0"/>'
    '<path d="M120 225 q20 -20 40 0 t40 0 t40 0 t40 0"/></g>'
)

PRODUCTS: tuple[Product, ...] = (
    Product(
        slug="handloom-cotton-kurta",
        product_id=7001,
        variant_id=8001,
        title="Handloom Cotton Kurta",
        variant_title="Indigo / M",
        price=Decimal("1499.00"),
        blurb="Breathable handwoven cotton from Andhra looms.",
        background="#dbeafe",
        accent="#1e3a8a",
        motif=_KURTA,
    ),
    Product(
        slug="block-print-dupatta",
        product_id=7002,
        variant_id=8002,
        title="Block-print Dupatta",
        variant_title="Madder red",
        price=Decimal("699.00"),
        blurb="Hand block-printed in Bagru with natural dyes.",
        background="#fee2e2",
        accent="#b91c1c",
        motif=_DUPATTA,
    ),
    Product(
        slug="kolhapuri-chappals",
        product_id=7003,
        variant_id=8003,
        title="Kolhapuri Chappals",
        variant_title="Size 7",
        price=Decimal("1199.00"),
        blurb="Vegetable-tanned leather, stitched by hand.",
        background="#fef3c7",
        accent="#92400e",
        motif=_CHAPPALS,
    ),
    Product(
        slug="brass-diya-set",
        product_id=7004,
        variant_id=8004,
        title="Brass Diya Set",
        variant_title="Set of 4",
        price=Decimal("849.00"),
        blurb="Cast brass lamps from Moradabad.",
        background="#ffedd5",
        accent="#b45309",
        motif=_DIYA,
    ),
    Product(
        slug="masala-chai-gift-tin",
        product_id=7005,
        variant_id=8005,
        title="Masala Chai Gift Tin",
        variant_title="250 g",
        price=Decimal("399.00"),
        blurb="Assam CTC with cardamom, ginger and clove.",
        background="#dcfce7",
        accent="#166534",
        motif=_CHAI,
    ),
    Product(
        slug="banarasi-silk-saree",
        product_id=7006,
        variant_id=8006,
        title="Banarasi Silk Saree",
        variant_title="Magenta",
        price=Decimal("4999.00"),
        blurb="Pure silk with a zari border, woven in Varanasi.",
        background="#fae8ff",
        accent="#a21caf",
        motif=_SAREE,
    ),
)

BY_VARIANT: dict[int, Product] = {product.variant_id: product for product in PRODUCTS}
BY_SLUG: dict[str, Product] = {product.slug: product for product in PRODUCTS}


def product_for_variant(variant_id: int) -> Product | None:
    return BY_VARIANT.get(variant_id)


def render_svg(product: Product) -> str:
    """A 400×400 picture of the product; same input, same bytes (cacheable)."""
    motif = product.motif.replace("{accent}", product.accent)
    title = escape(product.title)
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 400" width="400" height="400" '
        f'role="img" aria-label="{title}">'
        f'<rect width="400" height="400" fill="{product.background}"/>'
        f"{motif}"
        f'<rect x="0" y="330" width="400" height="70" fill="{product.accent}" opacity=".92"/>'
        f'<text x="200" y="372" font-size="24" text-anchor="middle" fill="#fff" '
        f'font-family="system-ui, -apple-system, Segoe UI, sans-serif">{title}</text>'
        "</svg>"
    )
