"""Login (OAuth2 password flow) and the current-user dependencies."""
