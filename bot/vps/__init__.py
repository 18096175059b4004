"""The provider's Backups API: client, typed models and the errors it raises."""
