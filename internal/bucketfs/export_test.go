package bucketfs

// DataGets is the number of GET requests for file data this mount made.
func (s *Server) DataGets() int64 { return s.fsys.st.gets.Load() }

// PeakGets is the most ranged GETs for file data this mount had in flight at once.
func (s *Server) PeakGets() int64 { return s.fsys.st.getsPeak.Load() }

// StoreLookups and StoreListings count the one-name lookups and the
// directory listings this mount asked the store for.
func (s *Server) StoreLookups() int64  { return s.fsys.st.lookups.Load() }
func (s *Server) StoreListings() int64 { return s.fsys.st.listings.Load() }

// TableHandles is the number of file handles the kernel table (what a
// handover or a recovery restores) holds open.
func (s *Server) TableHandles() int {
	t := s.conn.table
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.handles)
}
