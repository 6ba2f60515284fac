from django.contrib import admin

from apps.catalog.models import Category, Comment, Order, OrderLine, Product, Tag


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "parent"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "price", "in_stock", "category"]
    list_filter = ["in_stock", "category"]
    search_fields = ["sku", "name"]
    filter_horizontal = ["tags"]


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    raw_id_fields = ["product"]


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["reference", "customer", "status", "placed_at"]
    list_filter = ["status"]
    inlines = [OrderLineInline]
    raw_id_fields = ["customer"]


admin.site.register(Tag)
admin.site.register(Comment)
