package bucketfs

// DataGets is the number of GET requests for file data this mount made.
func (s *Server) DataGets() int64 { return s.fsys.st.gets.Load() }

// PeakGets is the most ranged GETs for file data this mount had in flight at once.
func (s *Server) PeakGets() int64 { return s.fsys.st.getsPeak.Load() }
